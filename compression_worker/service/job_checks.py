"""What the worker checks of a job before it starts: the files it names exist here, and its architecture is
one this worker can build (the settings themselves were checked when the job was parsed)."""

from __future__ import annotations

from pathlib import Path

from compression_worker.model.ean import PRESETS
from edgefer.jobs.spec import JobError, JobSpec


def check_runnable(spec: JobSpec) -> None:
    if not Path(spec.data).exists():
        raise JobError(f"{spec.data}: no such data file or folder")
    if spec.test_data and not Path(spec.test_data).exists():
        raise JobError(f"{spec.test_data}: no such test data file")
    if spec.arch not in PRESETS:
        raise JobError(f"unknown architecture {spec.arch!r}; choose from {sorted(PRESETS)}")
    for teacher in spec.teachers or []:
        if not Path(teacher).exists():
            raise JobError(f"{teacher}: no such teacher model file")
