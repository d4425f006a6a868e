"""Import MiniCPM-o's own code from a model directory, the way the demo's worker does.

A model directory (a downloaded checkpoint, or one built by `checkpoint.py`) carries the model's
Python files beside its weights. They use relative imports (`from .configuration_minicpmo import
...`), so they must be imported as a package. transformers' `trust_remote_code` does that too, but
its import check refuses `modeling_minicpmo.py` for an `import flag_gems` it cannot see is guarded;
registering the directory itself as a package avoids the check and copies nothing.

Two layouts exist:
- `unified`: `modeling_minicpmo_unified.py`, one `MiniCPMO` with `init_unified`, `set_mode` and the
  `duplex_*` calls: every feature of the worker;
- `hf`: only `modeling_minicpmo.py`, the Hugging Face style class: text/image/audio chat without
  audio out. The backend refuses what that class cannot do (see `Capabilities`).
"""

from __future__ import annotations

import hashlib
import importlib
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

UNIFIED_MODULE = "modeling_minicpmo_unified"
HF_MODULE = "modeling_minicpmo"
CONFIG_MODULE = "configuration_minicpmo"


@dataclass(frozen=True)
class ModelCode:
    """The imported model package of one directory."""

    directory: Path
    layout: str               # "unified" | "hf"
    modeling: types.ModuleType
    configuration: types.ModuleType

    @property
    def model_class(self) -> Any:
        return self.modeling.MiniCPMO

    @property
    def config_class(self) -> Any:
        return self.configuration.MiniCPMOConfig

    def processor_mode(self, name: str) -> Any:
        """`ProcessorMode.CHAT` etc. of the unified class (None in the `hf` layout)."""
        modes = getattr(self.modeling, "ProcessorMode", None)
        return None if modes is None else modes[name.upper()]


def find_layout(directory: Path) -> str:
    if (directory / f"{UNIFIED_MODULE}.py").is_file():
        return "unified"
    if (directory / f"{HF_MODULE}.py").is_file():
        return "hf"
    raise FileNotFoundError(f"{directory}: no {UNIFIED_MODULE}.py or {HF_MODULE}.py: not a MiniCPM-o model directory "
                            "(download the model, or build a random-weight one with `omnikube-checkpoint`)")


def import_model_code(directory: str | Path) -> ModelCode:
    """Register `directory` as a package (once per path) and import its model modules."""
    path = Path(directory).resolve()
    layout = find_layout(path)
    package = "omnikube_model_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    if package not in sys.modules:
        module = types.ModuleType(package)
        module.__path__ = [str(path)]  # a namespace-like package: nothing is written into the directory
        module.__package__ = package
        sys.modules[package] = module
    configuration = importlib.import_module(f"{package}.{CONFIG_MODULE}")
    modeling = importlib.import_module(f"{package}.{UNIFIED_MODULE if layout == 'unified' else HF_MODULE}")
    return ModelCode(directory=path, layout=layout, modeling=modeling, configuration=configuration)
