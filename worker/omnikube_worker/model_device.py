"""Which device the model runs on, and what minicpmo-utils needs to run there.

`model.device: auto` (the default) is the GPU when torch sees one, else the CPU: the same code path
runs in CI on a CPU and in production on a GPU. Two things in minicpmo-utils 1.0.7 do not follow a
device setting, and are adapted here rather than by editing its files or the model's:

- `stepaudio2.Token2wav` (the vocoder) is written for CUDA only: `torch.cuda.current_device()`,
  `.cuda()` on its modules and tensors, `device='cuda'` literals. Without CUDA, those calls can
  only fail, so on a CPU-only machine they are redirected to the configured device.
- torchaudio 2.9+ reads files through torchcodec, which minicpmo-utils does not install; the
  vocoder and the S3 tokenizer read the reference voice with `torchaudio.load`. It is served by
  soundfile (what the model code itself writes those files with).
"""

from __future__ import annotations

import logging
import types
from typing import Any

log = logging.getLogger("omnikube.worker.device")

_INSTALLED: set[str] = set()


def resolve_device(configured: str) -> str:
    """`auto` -> `cuda` when torch sees a GPU, else `cpu`; `cuda`, `cuda:N` and `cpu` as given."""
    import torch

    if configured == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if configured.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"model.device is {configured!r} but torch sees no GPU "
                           f"(torch {torch.__version__}); use auto or cpu")
    if configured != "cpu" and not configured.startswith("cuda"):
        raise ValueError(f"unknown model.device {configured!r}: use auto, cpu, cuda or cuda:N")
    return configured


def adapt_model_utils(device: str) -> None:
    """Make minicpmo-utils' vocoder and audio reading work on `device` (idempotent)."""
    _serve_torchaudio_load_with_soundfile()
    if device == "cpu":
        _redirect_cuda_calls_to_cpu()


def _serve_torchaudio_load_with_soundfile() -> None:
    if "torchaudio.load" in _INSTALLED:
        return
    import soundfile
    import torch
    import torchaudio

    def load(path: Any, *args: Any, **kwargs: Any) -> tuple[Any, int]:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        return torch.from_numpy(samples.T.copy()), int(rate)

    torchaudio.load = load
    _INSTALLED.add("torchaudio.load")


def _redirect_cuda_calls_to_cpu() -> None:
    import torch

    if "cuda->cpu" in _INSTALLED or torch.cuda.is_available():
        return
    import stepaudio2.token2wav as token2wav  # type: ignore[import-not-found]

    cpu = torch.device("cpu")
    # `.cuda()` cannot succeed without CUDA; on this machine it means "the model's device".
    torch.Tensor.cuda = lambda self, *args, **kwargs: self.to(cpu)  # type: ignore[method-assign]
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self.to(cpu)  # type: ignore[method-assign]
    token2wav.torch = _CpuTorch(torch)
    _INSTALLED.add("cuda->cpu")
    log.info("no CUDA: minicpmo-utils' token2wav runs on the CPU (its cuda calls are redirected)")


class _CpuTorch(types.SimpleNamespace):
    """`torch` as `stepaudio2.token2wav` sees it on a CPU-only machine: 'cuda' means the CPU."""

    def __init__(self, torch: Any) -> None:
        super().__init__()
        self._torch = torch
        self.cuda = types.SimpleNamespace(current_device=lambda: 0, is_available=lambda: False)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._torch, name)

    def device(self, kind: Any, *args: Any) -> Any:
        return self._torch.device("cpu") if str(kind).startswith("cuda") else self._torch.device(kind, *args)

    def tensor(self, *args: Any, device: Any = None, **kwargs: Any) -> Any:
        if device is not None and str(device).startswith("cuda"):
            device = "cpu"
        return self._torch.tensor(*args, device=device, **kwargs)
