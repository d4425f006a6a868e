#!/usr/bin/env bash
# Wheels a GPU machine without internet lacks to run the worker's minicpmo backend and
# bench/gpu_model.py, for its Python (default 3.12: the `device` tool's image, which already has
# torch, torchaudio, onnx, onnxruntime, numpy, scipy, numba, pillow, httpx, pyyaml, safetensors,
# accelerate and prometheus-client). Written to .whl/ (git-ignored); install there with
#   python3 -m pip install --no-index --no-deps .whl/*.whl
# and run the project from the checkout with PYTHONPATH=.:worker (see docs/benchmarks.md, GPU).
# av (PyAV, 36 MB) is needed there too: the worker decodes its default voice with it at load, and
# without it the worker exits with code 3. With av the wheels are about 59 MiB; packing the model
# directory as a .tar.gz beside them (4 MiB) keeps one `device` carry under its 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${PYVER:-3.12}
OUT=${OUT:-.whl}
PIP=${PIP:-.venv/bin/pip}
mkdir -p "$OUT"
"$PIP" download --quiet --no-deps --only-binary=:all: --python-version "$PYVER" \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d "$OUT" \
  transformers==4.51.0 tokenizers==0.21.4 huggingface-hub==0.36.2 librosa==0.9.0 audioread decorator pooch resampy \
  soundfile cffi pycparser hyperpyyaml ruamel.yaml==0.18.17 ruamel.yaml.clib fastapi==0.165.0 starlette==1.10.0 uvicorn==0.55.0 pydantic pydantic-core \
  annotated-types typing-inspection websockets python-multipart av==18.1.0 \
  opentelemetry-api==1.45.3 importlib-metadata zipp 2>&1 | grep -v "^WARNING: Location" || true
# minicpmo-utils is published as a source archive only: build its (pure Python) wheel here.
"$PIP" wheel --quiet --no-deps --no-build-isolation -w "$OUT" "minicpmo-utils==1.0.7" 2>&1 | grep -v "^WARNING: Location" || true
du -sh "$OUT"
