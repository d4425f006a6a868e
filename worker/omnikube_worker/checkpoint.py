"""Build a random-weight MiniCPM-o 4.5 model directory from the model's own code and a config.

The result is a normal model directory, the shape `from_pretrained` and the worker load:
the model's Python and tokenizer files, `config.json`, `model*.safetensors` (bf16), and the
`assets/token2wav/` files minicpmo-utils' `stepaudio2.Token2wav` opens:

| file | what |
| --- | --- |
| `flow.yaml`, `config.yaml` | the flow model's and the causal HiFT's hyper-parameters (`--token2wav tiny` shrinks them) |
| `flow.pt`, `hift.pt`, `hift_original.pt` | random state dicts of those classes, built from the yaml by stepaudio2's own loader |
| `speech_tokenizer_v2_25hz.onnx` | the S3 tokenizer v2's weights as an ONNX initializer container, named the way `s3tokenizer.load_model` reads them (it converts the file to torch; nothing runs it as a graph) |
| `campplus.onnx` | a small real ONNX graph with CAM++'s interface ([1, T, 80] fbank -> [1, 192] speaker embedding: mean over time, then a random projection). NOT CAM++ |

plus `assets/ref_audio/ref_minicpm_signature.wav`, the default voice (espeak-ng speech when
installed, else a synthetic voice). Everything random comes from one seed, so the same inputs give
the same weights. It lets a user prove a GPU node, a driver, an image and a chart end to end
before downloading 20 GB of real weights; nothing it says is meaningful.

Heavy imports (torch, transformers, onnx, stepaudio2) happen inside the functions: this is the
worker's model side.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .model_code import import_model_code

log = logging.getLogger("omnikube.worker.checkpoint")

CODE_SUFFIXES = (".py", ".json", ".txt", ".model", ".tiktoken")
SKIPPED_FILES = {"config.full.json", "config.tiny.json", "config.json"}
TOKEN2WAV_DIR = Path("assets") / "token2wav"
DEFAULT_VOICE = Path("assets") / "ref_audio" / "ref_minicpm_signature.wav"
VOICE_SENTENCE = "Hello, I am the default voice of this random weight checkpoint."
BUILD_MARKER = "omnikube-checkpoint.json"
BUILDER_VERSION = 1  # part of the cache key: a change to what this module writes rebuilds cached copies

# `--token2wav tiny`: the flow and HiFT at toy sizes (same classes, same interfaces) so a CPU
# turns a second of speech tokens into audio in well under a second. Paths are into the yaml.
TINY_TOKEN2WAV = {
    "flow.yaml": {
        ("flow", "input_size"): 64,
        ("flow", "encoder", "input_size"): 64,
        ("flow", "encoder", "output_size"): 64,
        ("flow", "encoder", "num_blocks"): 1,
        ("flow", "encoder", "num_up_blocks"): 1,
        ("flow", "encoder", "attention_heads"): 2,
        ("flow", "encoder", "linear_units"): 128,
        # The DiT's width stays: its streaming cache buffers are allocated at the published sizes.
        ("flow", "decoder", "estimator", "depth"): 2,
    },
    "config.yaml": {
        ("hift", "base_channels"): 32,
        ("hift", "f0_predictor", "cond_channels"): 32,
    },
}


@dataclass(frozen=True)
class BuildRequest:
    code_dir: Path
    config_path: Path
    output: Path
    token2wav: str = "full"        # "full" | "tiny"
    seed: int = 0
    device: str = "cpu"            # where the weights are initialised (a GPU makes full size fast)

    def fingerprint(self) -> str:
        """Changes when anything that shapes the output changes (code, config, sizes, seed)."""
        digest = hashlib.sha256()
        for path in sorted(code_files(self.code_dir)) + [self.config_path]:
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
        digest.update(f"{self.token2wav}:{self.seed}:{BUILDER_VERSION}".encode())
        for name in ("flow.yaml", "config.yaml"):
            source = self.code_dir / "token2wav" / name
            if source.is_file():
                digest.update(source.read_bytes())
        return digest.hexdigest()[:16]


def code_files(code_dir: Path) -> Iterator[Path]:
    """The model directory's own files: code, tokenizer, processor and generation configs."""
    for path in sorted(code_dir.iterdir()):
        if path.is_file() and path.suffix in CODE_SUFFIXES and path.name not in SKIPPED_FILES:
            yield path


def build(request: BuildRequest) -> Path:
    """Write the model directory at `request.output` (atomically: a temporary sibling renamed at
    the end, so a failed build leaves nothing half-written). Returns the output path."""
    output = request.output.resolve()
    fingerprint = request.fingerprint()
    if _is_built(output, fingerprint):
        log.info("%s is already built from these inputs (%s)", output, fingerprint)
        return output
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    staging.chmod(0o755)
    started = time.monotonic()
    try:
        for path in code_files(request.code_dir):
            shutil.copyfile(path, staging / path.name)
        config = json.loads(request.config_path.read_text())
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        parameters = write_weights(staging, request)
        write_token2wav(staging / TOKEN2WAV_DIR, request)
        write_default_voice(staging / DEFAULT_VOICE)
        (staging / BUILD_MARKER).write_text(json.dumps({
            "fingerprint": fingerprint, "parameters": parameters, "seed": request.seed,
            "token2wav": request.token2wav, "config": str(request.config_path),
            "note": "random weights: proves the stack runs, says nothing about quality",
        }, indent=2))
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("built %s (%d parameters) in %.1f s", output, parameters, time.monotonic() - started)
    return output


def cached_build(code_dir: Path, config_path: Path, token2wav: str = "tiny", seed: int = 0,
                 cache_dir: Path | None = None) -> Path:
    """A built directory under the user's cache, keyed by its inputs (tests and demos share it)."""
    root = cache_dir or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "omnikube" / "checkpoints"
    probe = BuildRequest(code_dir=code_dir, config_path=config_path, output=root / "probe", token2wav=token2wav,
                         seed=seed)
    output = root / f"{config_path.stem}-{probe.fingerprint()}"
    return build(BuildRequest(code_dir=code_dir, config_path=config_path, output=output, token2wav=token2wav,
                              seed=seed))


def _is_built(output: Path, fingerprint: str) -> bool:
    marker = output / BUILD_MARKER
    try:
        return json.loads(marker.read_text()).get("fingerprint") == fingerprint
    except (OSError, ValueError):
        return False


# ---- the model's weights -------------------------------------------------------------------------

def write_weights(directory: Path, request: BuildRequest) -> int:
    """Instantiate the model class from the copied code with random weights and save it (bf16)."""
    import torch

    code = import_model_code(directory)
    config = code.config_class.from_pretrained(str(directory))
    torch.manual_seed(request.seed)
    with torch.device(request.device):
        model = code.model_class(config).to(torch.bfloat16)
    model.save_pretrained(str(directory), safe_serialization=True, max_shard_size="5GB")
    parameters = sum(p.numel() for p in model.parameters())
    del model
    return parameters


# ---- token2wav -----------------------------------------------------------------------------------

def write_token2wav(directory: Path, request: BuildRequest) -> None:
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    source = request.code_dir / "token2wav"
    for name in ("flow.yaml", "config.yaml"):
        text = (source / name).read_text()
        if request.token2wav == "tiny":
            text = set_yaml_values(text, TINY_TOKEN2WAV[name])
        (directory / name).write_text(text)
    torch.manual_seed(request.seed + 1)
    flow, hift, original = random_vocoders(directory)
    torch.save(flow.state_dict(), directory / "flow.pt")
    torch.save(hift.state_dict(), directory / "hift.pt")
    torch.save(original.state_dict(), directory / "hift_original.pt")
    rng = np.random.default_rng(request.seed + 2)
    write_s3_tokenizer(directory / "speech_tokenizer_v2_25hz.onnx", rng)
    write_speaker_encoder(directory / "campplus.onnx", rng)


def random_vocoders(directory: Path) -> tuple[Any, Any, Any]:
    """The flow model and both HiFT vocoders, built by stepaudio2 itself from the yaml files."""
    from stepaudio2.flashcosyvoice.modules.hifigan import HiFTGenerator  # type: ignore[import-not-found]
    from stepaudio2.token2wav import _load_config  # type: ignore[import-not-found]

    flow = _load_config(directory / "flow.yaml")["flow"]
    hift = _load_config(directory / "config.yaml", {"hifigan": None})["hift"]
    return flow, hift, HiFTGenerator()


def set_yaml_values(text: str, values: dict[tuple[str, ...], Any]) -> str:
    """Replace scalar values at key paths of a (hyperpyyaml-tagged) yaml document, keeping its tags."""
    import yaml

    root = yaml.compose(text)
    for path, value in values.items():
        node = root
        for key in path:
            node = next(v for k, v in node.value if k.value == key)
        node.value = str(value)
    return yaml.serialize(root)


def write_s3_tokenizer(path: Path, rng: np.random.Generator) -> None:
    """S3TokenizerV2's 102 tensors as ONNX initializers, under the node and input names
    `s3tokenizer.utils.onnx2torch` maps back to the torch module's state dict."""
    import onnx
    from onnx import helper, numpy_helper
    from s3tokenizer.model_v2 import ModelConfig, S3TokenizerV2  # type: ignore[import-not-found]

    import torch

    torch.manual_seed(int(rng.integers(1 << 31)))
    state = S3TokenizerV2("speech_tokenizer_v2_25hz", ModelConfig()).state_dict()
    fixed_inputs = {"encoder.conv1.weight": "onnx::Conv_2216", "encoder.conv1.bias": "onnx::Conv_2217",
                    "encoder.conv2.weight": "onnx::Conv_2218", "encoder.conv2.bias": "onnx::Conv_2219",
                    "quantizer._codebook.project_down.weight": "onnx::MatMul_2536",
                    "quantizer._codebook.project_down.bias": "quantizer.project_in.bias"}
    nodes, initializers = [], []

    def add(name: str, tensor: Any, node_name: str, op: str = "Identity", extra: tuple[str, ...] = ()) -> None:
        array = tensor.detach().float().numpy()
        if array.ndim == 2:
            array = array.T  # onnx2torch transposes every 2-D initializer back
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name=name))
        nodes.append(helper.make_node(op, [name, *extra], [f"{node_name}_out"], name=node_name))

    layer_norms: dict[str, dict[str, Any]] = {}
    for key, tensor in state.items():
        if key in fixed_inputs:
            add(fixed_inputs[key], tensor, f"/{key}")
            continue
        module, leaf = key.removeprefix("encoder.").rsplit(".", 1)
        if module.endswith("_ln"):
            layer_norms.setdefault(module, {})[leaf] = tensor
        elif module.endswith("fsmn_block"):
            add(key, tensor, f"/{module}.Conv")
        else:
            add(key, tensor, f"/{module}/" + {"weight": "MatMul", "bias": "Add"}[leaf])
    for module, parts in layer_norms.items():
        name = f"/{module}/LayerNormalization"
        for leaf in ("weight", "bias"):
            initializers.append(numpy_helper.from_array(parts[leaf].detach().float().numpy(), name=f"{module}.{leaf}"))
        nodes.append(helper.make_node("LayerNormalization", ["x", f"{module}.weight", f"{module}.bias"],
                                      [f"{name}_out"], name=name))
    graph = helper.make_graph(nodes, "s3tokenizer_v2_weights", [], [], initializer=initializers)
    onnx.save(helper.make_model(graph), str(path))


def write_speaker_encoder(path: Path, rng: np.random.Generator, dim: int = 192) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = rng.normal(0.0, 0.1, size=(80, dim)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["feats"], ["mean"], axes=[1], keepdims=0),
         helper.make_node("MatMul", ["mean", "projection"], ["embedding"])],
        "speaker_embedding_stand_in",
        [helper.make_tensor_value_info("feats", TensorProto.FLOAT, [1, None, 80])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, dim])],
        initializer=[numpy_helper.from_array(weight, name="projection")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


# ---- the default voice ---------------------------------------------------------------------------

def write_default_voice(path: Path) -> None:
    """Real speech from espeak-ng when it is installed (the worker image has it), else the
    simulated backend's synthetic voice; 16 kHz mono PCM WAV either way."""
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    if shutil.which("espeak-ng"):
        with tempfile.TemporaryDirectory() as scratch:
            spoken = Path(scratch) / "voice.wav"
            subprocess.run(["espeak-ng", "-w", str(spoken), VOICE_SENTENCE], check=True, capture_output=True)
            from omnikube.audio import decode_audio

            samples = decode_audio(spoken.read_bytes(), rate=16000)
    else:
        from .synth import speak

        samples = speak(VOICE_SENTENCE, rate=16000)
    soundfile.write(str(path), np.asarray(samples, dtype=np.float32), 16000, subtype="PCM_16")


# ---- CLI -----------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="omnikube-checkpoint",
        description="Build a random-weight MiniCPM-o 4.5 model directory from the model's code and a config.")
    parser.add_argument("--code", required=True, type=Path,
                        help="a directory with the model's code and tokenizer (e.g. a downloaded model directory)")
    parser.add_argument("--config", required=True, type=Path, help="config.json of the size to build")
    parser.add_argument("--output", required=True, type=Path, help="the model directory to write")
    parser.add_argument("--token2wav", choices=("full", "tiny"), default="full",
                        help="vocoder size: full (the published hyper-parameters) or tiny (CPU tests)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="where to initialise the weights (cuda makes full size fast)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for path in (args.code, args.config):
        if not path.exists():
            parser.error(f"{path} does not exist")
    output = build(BuildRequest(code_dir=args.code.resolve(), config_path=args.config.resolve(), output=args.output,
                                token2wav=args.token2wav, seed=args.seed, device=args.device))
    print(output)


if __name__ == "__main__":
    main()
