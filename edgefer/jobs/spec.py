"""What a job asks for: the data and the pipeline settings, checked before any work starts."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, fields


class JobError(ValueError):
    """A job that cannot run as given; the message goes into the job's status."""


@dataclass(frozen=True)
class JobSpec:
    data: str  # npz, fer2013.csv or a class folder, as the worker sees the path
    job_id: str = ""
    usage: str | None = None  # with a fer2013.csv: the rows to train on
    test_data: str | None = None  # reported in the card, never used to decide
    arch: str = "ean-s"
    teacher_epochs: int = 55
    rounds: int = 2
    round_epochs: int = 8
    temperature: float = 2.0
    alpha: float = 0.5
    distill_mode: str = "cached"  # cached soft labels (CPU budget) | consistent: the teacher on every augmented batch
    teachers: list[str] | None = None  # round 0 given (checkpoints or .onnx, several = ensemble), not trained; pruning learns from it too
    ema_decay: float = 0.0
    mixup: float = 0.0
    prune_target: float = 0.5
    local_epochs: int = 2
    finetune_epochs: int = 4
    quantize: bool = True
    promote: bool = True
    seed: int = 0

    @classmethod
    def parse(cls, raw: str | bytes) -> JobSpec:
        """From the JSON a client submitted; unknown or mistyped settings are named."""
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise JobError(f"job is not JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise JobError("job must be a JSON object")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise JobError(f"unknown job settings: {', '.join(unknown)}")
        if "data" not in data:
            raise JobError("job needs a data path")
        for name, value in data.items():
            expected = known[name].type
            if value is not None and not _type_ok(value, expected):
                raise JobError(f"job setting {name}: {value!r} is not {expected}")
        spec = cls(**data)
        spec.check_settings()
        return spec if spec.job_id else cls(**{**data, "job_id": uuid.uuid4().hex[:12]})

    def check_settings(self) -> None:
        """What is wrong whatever machine runs the job (ranges, modes), so a submitter hears it at once; what
        depends on the worker (its files, its architectures) is checked there
        (compression_worker/service/job_checks.py)."""
        if not 0 < self.prune_target < 0.95:
            raise JobError(f"impossible pruning target {self.prune_target}: give the share of MACs to remove, in (0, 0.95)")
        if self.distill_mode not in ("cached", "consistent"):
            raise JobError(f"unknown distill_mode {self.distill_mode!r}; use cached or consistent")
        if self.teachers and self.rounds < 1:
            raise JobError("given teachers need rounds >= 1: the distilled EAN is what gets pruned")
        if not 0.0 <= self.ema_decay < 1.0 or self.mixup < 0:
            raise JobError("ema_decay must be in [0, 1) and mixup >= 0")
        if min(self.teacher_epochs, self.round_epochs) < 1 or self.rounds < 0 or min(self.local_epochs, self.finetune_epochs) < 0:
            raise JobError("epochs must be >= 1 (local and fine-tune epochs >= 0) and rounds >= 0")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def _type_ok(value: object, expected: str) -> bool:
    if "list" in expected:
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    if "bool" in expected:
        return isinstance(value, bool)
    if "int" in expected:
        return isinstance(value, int) and not isinstance(value, bool)
    if "float" in expected:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, str)
