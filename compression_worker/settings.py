"""The `edgefer-worker` CLI's settings: where data and runs live, and the machine to train on.

Each field is the variable EDGEFER_<FIELD>; the stages' own settings (training, distillation, pruning) are
the fields of their config dataclasses, turned into flags by edgefer/settings_fields.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgefer.env_settings import EnvSettings, resolve_threads


@dataclass(frozen=True)
class WorkerSettings(EnvSettings):
    data_dir: Path = Path("../shared/data/fer2013")  # folder with train.npz and test_public.npz: the stages' default data
    runs_dir: Path = Path("runs")  # each stage's default --workdir is a folder under it
    device: str = "auto"  # cpu, cuda or auto (cuda when present)
    threads: int = 0  # torch and onnxruntime threads (0: all cores)

    def __post_init__(self) -> None:
        object.__setattr__(self, "threads", resolve_threads("threads", self.threads))

    @property
    def train_data(self) -> Path:
        return self.data_dir / "train.npz"

    @property
    def test_data(self) -> Path:
        return self.data_dir / "test_public.npz"
