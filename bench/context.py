"""What every benchmark gets: where to put logs, and how long to run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Context:
    log_dir: Path       # one folder per run: process logs, configs, raw samples
    quick: bool = False  # shorter windows and fewer levels, for trying the harness out

    def dir(self, name: str) -> Path:
        path = self.log_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path
