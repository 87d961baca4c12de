"""What the worker checks of a job before it starts: the files it names exist here, and a teacher it is asked to
train is an architecture this worker can build (the settings themselves were checked when the job was parsed)."""

from __future__ import annotations

from pathlib import Path

from compression_worker.model.zoo import ARCHITECTURES
from edgefer.jobs.spec import JobError, JobSpec


def check_runnable(spec: JobSpec) -> None:
    if not Path(spec.data).exists():
        raise JobError(f"{spec.data}: no such data file or folder")
    if spec.test_data and not Path(spec.test_data).exists():
        raise JobError(f"{spec.test_data}: no such test data file")
    teacher = spec.recipe.teacher
    if teacher.arch and teacher.arch not in ARCHITECTURES:
        raise JobError(f"unknown teacher architecture {teacher.arch!r}; choose from {', '.join(ARCHITECTURES)}")
    for path in teacher.files or []:
        if not Path(path).exists():
            raise JobError(f"{path}: no such teacher model file")
