"""Worker settings: defaults from environment variables (EDGEFER_*), overridden by command-line flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _env_path(name: str, default: str) -> Path:
    return Path(os.environ.get(name, default))


@dataclass(frozen=True)
class WorkerSettings:
    data_dir: Path = field(default_factory=lambda: _env_path("EDGEFER_DATA_DIR", "../shared/data/fer2013"))
    runs_dir: Path = field(default_factory=lambda: _env_path("EDGEFER_RUNS_DIR", "runs"))
    device: str = field(default_factory=lambda: os.environ.get("EDGEFER_DEVICE", "auto"))
    threads: int = field(default_factory=lambda: int(os.environ.get("EDGEFER_THREADS", "0")) or (os.cpu_count() or 1))

    @property
    def train_data(self) -> Path:
        return self.data_dir / "train.npz"

    @property
    def test_data(self) -> Path:
        return self.data_dir / "test_public.npz"
