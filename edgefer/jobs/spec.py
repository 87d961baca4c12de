"""What a job asks for: the data and the pipeline settings, checked before any work starts."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import asdict, dataclass

from edgefer.rollouts.spec import RolloutSpec, RolloutSpecError
from edgefer.settings_fields import check_json_fields, option

_SHA_PREFIX = re.compile(r"[0-9a-f]{8,64}")


class JobError(ValueError):
    """A job that cannot run as given; the message goes into the job's status."""


@dataclass(frozen=True)
class JobSpec:
    data: str  # npz, fer2013.csv or a class folder, as the worker sees the path
    job_id: str = ""  # the job's name and idempotency key: resubmitting one id publishes once (unset: a random id)
    target_fleet: str = ""  # the fleet it compresses for: its device class, serving model, registry (unset: the worker's)
    usage: str | None = None  # with a fer2013.csv: the rows to train on
    extra_data: str | None = None  # more faces (npz, csv or class folder) merged into the data, split by the same rule
    test_data: str | None = None  # reported in the card, never used to decide
    held_back_seed: int = 0  # seed of the held-back split (keep it: stored teachers and the serving model share it)
    arch: str = "ean-s"  # the EAN preset that is distilled, pruned and shipped
    teacher: str = option("best", doc="round 0: best (the most accurate stored model for this data, else train one), "
                          "train, or a stored artefact's sha256 (8+ hex digits; `edgefer-jobs lineage` lists them)")
    teacher_arch: str = ""  # architecture of a teacher trained here (unset: the student's)
    teacher_epochs: int = 55  # epochs of a teacher trained here
    rounds: int = 1  # ITS student rounds
    round_epochs: int = 30  # epochs per ITS round
    temperature: float = 2.0  # softmax temperature of the soft labels (ITS and pruning)
    alpha: float = 0.8  # weight of the soft-label term (ITS and pruning)
    distill_mode: str = option("consistent", choices=("cached", "consistent"),
                               doc="the teacher on every augmented batch, or cached soft labels (a smaller CPU budget)")
    teachers: list[str] | None = option(None, flag="teacher-file", doc="round 0 given as files (checkpoints or .onnx; "
                                        "repeat for an ensemble) instead of `teacher`; pruning learns from it too")
    ema_decay: float = 0.999  # keep and validate an EMA of the weights (0: off)
    mixup: float = 0.0  # mixup Beta(a, a) parameter (0: off)
    prune_target: float | None = None  # share of MACs pruning removes (unset: what the fleet's MAC budget needs)
    local_epochs: int = 3  # per pruning step, retraining only the touched layers
    finetune_epochs: int = 12  # per pruning step, fine-tuning the whole network
    quantize: bool = True  # publish the INT8 model when it keeps the float's held-back accuracy (no: the float one)
    int8_tolerance: float = 0.003  # how far below the float model the INT8 one may be on the held-back faces
    promote: bool = True  # roll out a version that passes the gate (no: publish only)
    rollout: dict | None = option(None, doc="roll out step by step instead of promoting at once: a rollout spec "
                                  "(edgefer/rollouts/spec.py fields, {} for the defaults); the job ends when it is "
                                  "promoted or rolled back (edgefer-rollouts must run)")
    seed: int = 0  # weights and augmentation

    @classmethod
    def parse(cls, raw: str | bytes) -> JobSpec:
        """From the JSON a client submitted; unknown or mistyped settings are named."""
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise JobError(f"job is not JSON ({exc})") from exc
        try:
            check_json_fields(cls, data, "job")
        except ValueError as exc:
            raise JobError(str(exc)) from exc
        if "data" not in data:
            raise JobError("job needs a data path")
        spec = cls(**data)
        spec.check_settings()
        return spec if spec.job_id else cls(**{**data, "job_id": uuid.uuid4().hex[:12]})

    def check_settings(self) -> None:
        """What is wrong whatever machine runs the job (ranges, modes), so a submitter hears it at once; what
        depends on the worker (its files, its architectures) is checked there
        (compression_worker/service/job_checks.py)."""
        if self.rollout is not None:
            try:
                RolloutSpec.from_dict(self.rollout)
            except RolloutSpecError as exc:
                raise JobError(f"job setting rollout: {exc}") from exc
        if self.teacher not in ("best", "train") and not _SHA_PREFIX.fullmatch(self.teacher):
            raise JobError(f"teacher must be best, train or an artefact's sha256 (8+ hex digits), not {self.teacher!r}")
        if self.prune_target is not None and not 0 < self.prune_target < 0.95:
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
