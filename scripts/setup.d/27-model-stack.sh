#!/usr/bin/env bash
# The model stack the worker's minicpmo backend runs MiniCPM-o's own code with, on the CPU torch of
# 25-torch-cpu.sh: the real-model tests load a random-weight checkpoint through the worker process.
#
# - transformers 4.51.0 exactly (the version the model code documents), tokenizers 0.21,
#   huggingface-hub < 1.0, accelerate;
# - minicpmo-utils[all] 1.0.7: the token2wav vocoder (stepaudio2), s3tokenizer, onnxruntime, librosa;
# - torchaudio (its pure-Python parts: kaldi fbank and Resample, used by the vocoder). The index has
#   no torchaudio for the CPU torch installed here; 2.11's compiled extension is built against
#   torch 2.11's ABI and would refuse to load, so it is removed and torchaudio runs in its
#   pure-Python mode (reading files is served by soundfile: worker/omnikube_worker/model_device.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
want='transformers==4.51.0 tokenizers==0.21.4 huggingface-hub==0.36.2 accelerate==1.12.0 minicpmo-utils==1.0.7 torchaudio==2.11.1'
if "$PY" - "$want" <<'PYEOF'
import sys
from importlib.metadata import PackageNotFoundError, version
for spec in sys.argv[1].split():
    name, wanted = spec.split("==")
    try:
        if version(name) != wanted:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PYEOF
then
  exit 0
fi
# librosa 0.9 (minicpmo-utils' pin) imports pkg_resources, which setuptools 81 dropped.
"$VENV/bin/pip" install --quiet "transformers==4.51.0" "tokenizers==0.21.4" "huggingface-hub==0.36.2" \
  "accelerate==1.12.0" "minicpmo-utils[all]==1.0.7" "setuptools<81" "soundfile>=0.12" "onnx>=1.16"
"$VENV/bin/pip" install --quiet --no-deps "torchaudio==2.11.1"
lib=$("$PY" -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("torchaudio").origin).parent / "lib")')
rm -f "$lib"/_torchaudio*.so "$lib"/libtorchaudio*.so "$lib"/torchaudio_prefixctc*.so
"$PY" -c 'import torchaudio.compliance.kaldi, stepaudio2.token2wav, transformers; assert transformers.__version__ == "4.51.0"'
