"""The compression recipe, declared once: every setting of the teacher, optimisation, distillation, pruning and
export stages, as plain dataclasses (no torch).

The worker's stage commands build their flags from these classes (`--optim.lr`, `--distill.temperature`, ...),
a job's JSON nests the same way (`{"recipe": {"distill": {"temperature": 2.0}}}`), and the pipeline runs them
unchanged. Each class checks itself when it is made, so a bad value is refused where it is typed or submitted;
only what depends on the machine that runs the job (its files, its teacher architectures) is checked there.

`Recipe()` is the worker's default job: its defaults differ from the stage commands' where the job is a
different use (one ITS round, distillation from stored views, pruning to the fleet's budget), and are written
out below, next to the class they set.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgefer.jobs.architectures import PRESETS
from edgefer.settings_fields import option

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
DISTILL_MODES: tuple[str, ...] = ("cached", "consistent", "views")  # views: stored augmented views, made once
IMPORTANCES: tuple[str, ...] = ("l2-gamma", "l1", "bn-gamma", "random")  # l2-gamma is the method's; the rest ablations
RATIO_MODES: tuple[str, ...] = ("derived", "uniform")
MAX_PRUNE_TARGET = 0.95  # a larger share of the MACs removed leaves no network worth retraining
JOB_VIEWS = 8  # a job's stored views per face: the two INT8 VGG-13 teachers label 8 in about 27 minutes on 2 CPU cores
_SHA_PREFIX = re.compile(r"[0-9a-f]{8,64}")


@dataclass(frozen=True)
class AugmentConfig:
    max_rotation_deg: float = 12.0  # random rotation up to this many degrees either way
    scale_range: tuple[float, float] = (0.9, 1.1)  # random zoom between these factors
    max_shift_px: float = 4.0  # random shift up to this many pixels (a padded random crop)
    hflip_prob: float = 0.5  # share of faces mirrored
    brightness: float = 0.25  # brightness jitter, a share of the pixel range
    contrast: float = 0.25  # contrast jitter, a share of the contrast
    erase_prob: float = 0.25  # share of faces with a random blanked patch
    erase_max_fraction: float = 0.3  # largest blanked patch, a share of the face's area

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class MixConfig:
    mixup_alpha: float = option(0.0, flag="mixup")  # mixup Beta(a, a) parameter (0: off)
    cutmix_alpha: float = option(0.0, flag="cutmix")  # CutMix Beta(a, a) parameter (0: off)
    prob: float = option(1.0, flag="mix-prob")  # share of batches mixed when mixup or CutMix is on
    cutmix_share: float = 0.5  # when both are on: share of mixed batches that use CutMix

    def __post_init__(self) -> None:
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0 or not 0 <= self.prob <= 1 or not 0 <= self.cutmix_share <= 1:
            raise ValueError("mixup/cutmix alpha must be >= 0, prob and cutmix_share in [0, 1]")

    @property
    def enabled(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class OptimConfig:
    """Everything that shapes one training run besides the model and the data."""

    epochs: int = 55  # epochs (per round, for distill; per phase, for prune: see its epoch settings)
    batch_size: int = 128  # faces per step
    optimizer: str = option("sgd", choices=("sgd", "adamw"))  # SGD with Nesterov momentum, or AdamW
    lr: float = 0.1  # peak learning rate of the cosine schedule
    weight_decay: float = 5e-4  # weight decay of the optimiser
    momentum: float = 0.9  # SGD momentum
    warmup_epochs: float = 1.0  # linear warm-up before the cosine decay
    final_lr_ratio: float = 0.0  # the cosine schedule ends at lr times this
    label_smoothing: float = 0.0  # on the hard-label loss
    seed: int = 0  # weights, augmentation and (unless --split-seed) the split
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    ema_decay: float = 0.0  # keep and validate an EMA of the weights (e.g. 0.999; 0: off)
    precision: str = option("auto", choices=PRECISIONS)  # bf16 autocast or fp32; auto: bf16 on a GPU and for dense nets on a bf16 CPU

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be sgd or adamw, got {self.optimizer!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs, batch_size and lr must be positive")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TeacherConfig:
    """Round 0 of a job: where its teacher comes from."""

    pick: str = option("best", doc="best (the most accurate stored model for this data, else train one), train, or "
                       "a stored artefact's sha256 (8+ hex digits; `edgefer-jobs lineage` lists them)")
    arch: str = ""  # architecture of a teacher trained here (unset: the student's)
    epochs: int = 55  # epochs of a teacher trained here
    files: list[str] | None = option(None, doc="round 0 given as files (checkpoints or .onnx; repeat for an ensemble) "
                                     "instead of `pick`; pruning learns from it too")
    # 2: the two shipped VGG-13s together label val 71.24% against the better one's 70.47% (BENCHMARKS section 12)
    ensemble: int = option(2, doc="with pick=best: average the logits of this many of the most accurate stored models "
                           "(each one labels every view)")

    def __post_init__(self) -> None:
        if self.pick not in ("best", "train") and not _SHA_PREFIX.fullmatch(self.pick):
            raise ValueError(f"teacher must be best, train or an artefact's sha256 (8+ hex digits), not {self.pick!r}")
        if self.epochs < 1:
            raise ValueError(f"teacher epochs must be >= 1, got {self.epochs}")
        if self.ensemble < 1:
            raise ValueError(f"teacher ensemble must be >= 1 models, got {self.ensemble}")


@dataclass(frozen=True)
class ITSConfig:
    """Iterative teacher-student transfer: round 0 is the teacher, each later round's student the next one."""

    arch: str = "ean-s"  # the student's EAN preset
    rounds: int = 3  # student rounds after the round-0 teacher
    temperature: float = 4.0  # softmax temperature of the soft labels
    alpha: float = 0.7  # weight of the soft (teacher) term; 1 - alpha goes to hard-label cross-entropy
    weight_transfer: bool = True  # start each student from the previous round's weights (no: from scratch)
    refine: str = option("latest", choices=("latest", "average"))  # how soft labels combine across rounds
    mirror_soft_labels: bool = True  # soft labels from face and mirror averaged (no: the face alone)
    restart_lr: float = 0.05  # peak learning rate of a warm-restarted round (weight transfer)
    teachers: tuple[Path, ...] = option((), flag="teacher", doc="round 0 given, not trained: a checkpoint of any zoo "
                                        "architecture or an .onnx; repeat for an ensemble")
    mode: str = option("cached", choices=DISTILL_MODES, doc="cached soft labels per round, the teacher on every augmented "
                       "batch (consistent: function matching), or on stored augmented views made once (views)")
    student_init: Path | None = None  # round 1's start when the teacher is another architecture (an EAN model.pt)
    views: int = 8  # mode views: augmented views per face, each labelled once by the teacher
    view_cache: Path | None = None  # mode views: a folder to keep round 1's views in, shared by runs with its teacher

    def __post_init__(self) -> None:
        if self.arch not in PRESETS:
            raise ValueError(f"unknown architecture {self.arch!r}; choose from {sorted(PRESETS)}")
        if self.rounds < 0 or self.temperature <= 0 or not 0.0 <= self.alpha <= 1.0:
            raise ValueError("rounds must be >= 0, temperature > 0 and alpha in [0, 1]")
        if self.refine not in ("latest", "average"):
            raise ValueError(f"unknown soft-label refinement {self.refine!r}; use latest or average")
        if self.mode not in DISTILL_MODES:
            raise ValueError(f"unknown distill_mode {self.mode!r}; use {' or '.join(DISTILL_MODES)}")
        if self.views < 1:
            raise ValueError("views must be >= 1")

    def to_dict(self) -> dict:
        return {**asdict(self), "teachers": [str(t) for t in self.teachers],
                "student_init": str(self.student_init) if self.student_init else None,
                "view_cache": str(self.view_cache) if self.view_cache else None}


@dataclass(frozen=True)
class PruneConfig:
    """Structured channel pruning with local channel retraining."""

    target_macs_reduction: float | None = option(0.5, flag="target", doc="share of the unpruned multiply-adds to "
                                                 "remove (0..1; in a job, unset: what the fleet's MAC budget needs)")
    importance: str = option("l2-gamma", choices=IMPORTANCES,
                             doc="channel importance: kernel L2 norm x BatchNorm gamma, or an ablation")
    l2_weight: float = 0.5  # l2-gamma: weight of the kernel L2 norm against |gamma|
    ratios: str = option("derived", choices=RATIO_MODES,
                         doc="per-layer ratios: derived from the importance (a global threshold), or uniform")
    min_keep_fraction: float = 0.2  # floor of channels kept per layer
    max_ratio: float = 0.8  # cap on any layer's pruning ratio
    channel_multiple: int = 8  # kept channels rounded up to a multiple (onnxruntime blocks by 8; 1: exact)
    steps: int = 1  # iterative pruning: prune+retrain steps to reach the target
    local_epochs: int = 3  # per step, retraining only the touched layers
    finetune_epochs: int = 6  # per step, fine-tuning the whole network
    local_retraining: bool = True  # retrain the touched layers first (no: fine-tune everything instead)
    temperature: float = 2.0  # softmax temperature of the teacher's soft labels
    alpha: float = 0.5  # weight of the teacher's soft labels in the retraining loss
    lr: float | None = None  # peak learning rate of the retraining (unset: the optimiser's)
    teachers: tuple[str, ...] = option((), flag="teacher", doc="learn from this model (checkpoint or .onnx; repeat for "
                                       "an ensemble) instead of the model being pruned")
    distill_mode: str = option("cached", choices=DISTILL_MODES,
                               doc="retrain on cached soft labels, with the teacher on every augmented batch "
                               "(consistent), or on stored augmented views made once (views)")
    views: int = 8  # mode views: augmented views per face, each labelled once by the teacher
    view_cache: Path | None = None  # mode views: a folder to keep the views in (a distillation's, when its teacher)

    def __post_init__(self) -> None:
        if self.distill_mode not in DISTILL_MODES:
            raise ValueError(f"unknown distill_mode {self.distill_mode!r}; use {' or '.join(DISTILL_MODES)}")
        if self.views < 1:
            raise ValueError("views must be >= 1")
        target = self.target_macs_reduction
        if target is not None and not 0 < target < MAX_PRUNE_TARGET:
            raise ValueError(f"impossible pruning target {target}: the target MAC reduction must be in (0, 1), "
                             f"below {MAX_PRUNE_TARGET}")
        if self.steps < 1 or self.local_epochs < 0 or self.finetune_epochs < 0:
            raise ValueError("steps must be >= 1 and epochs >= 0")
        if self.importance not in IMPORTANCES:
            raise ValueError(f"unknown importance {self.importance!r}: choose from {', '.join(IMPORTANCES)}")
        if self.ratios not in RATIO_MODES:
            raise ValueError(f"ratio mode must be derived or uniform, got {self.ratios!r}")
        if self.channel_multiple < 1:
            raise ValueError(f"channel_multiple must be >= 1, got {self.channel_multiple}")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"the retraining lr must be positive, got {self.lr}")

    def to_dict(self) -> dict:
        return {**asdict(self), "teachers": list(self.teachers),
                "view_cache": str(self.view_cache) if self.view_cache else None}


@dataclass(frozen=True)
class ExportConfig:
    """What is released: ONNX with parity checked, and the INT8 model when it keeps the float's accuracy."""

    quantize: bool = True  # publish the INT8 model when it keeps the float's held-back accuracy (no: the float one)
    int8_tolerance: float = 0.003  # how far below the float model the INT8 one may be on the held-back faces
    calibration_faces: int = 700  # training faces the INT8 activation ranges are measured on
    parity_faces: int = 256  # faces on which torch and onnxruntime must agree

    def __post_init__(self) -> None:
        if self.int8_tolerance < 0 or self.calibration_faces < 1 or self.parity_faces < 1:
            raise ValueError("int8_tolerance must be >= 0, calibration and parity faces >= 1")


@dataclass(frozen=True)
class Recipe:
    """A whole compression job's settings: what the worker runs, and what a stored student is keyed by."""

    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(epochs=50, ema_decay=0.999))  # epochs: per round
    # views: a dense teacher on the CPU labels JOB_VIEWS augmented views once (kept for the next job), where
    # consistent distillation would run it on every batch of every epoch (BENCHMARKS section 10)
    distill: ITSConfig = field(default_factory=lambda: ITSConfig(rounds=1, temperature=2.0, alpha=0.8, mode="views",
                                                                 views=JOB_VIEWS))
    # prune: 24 whole-network epochs (12 left a pruned job model 1 point under its student; section 12's curve gains
    # 0.3-0.6 from 12 to 24), 3 minutes of the job's hour
    prune: PruneConfig = field(default_factory=lambda: PruneConfig(
        target_macs_reduction=None, local_epochs=3, finetune_epochs=24, temperature=2.0, alpha=0.8, lr=0.02,
        distill_mode="views", views=JOB_VIEWS))
    export: ExportConfig = field(default_factory=ExportConfig)

    def __post_init__(self) -> None:
        if self.distill.teachers or self.distill.student_init or self.prune.teachers:
            raise ValueError("a job's teachers are recipe.teacher (pick or files), not distill or prune teachers")
        if self.distill.view_cache or self.prune.view_cache:
            raise ValueError("a job's stored views are kept by the worker beside its lineage: view_cache is for the "
                             "distill and prune commands")
        if self.teacher.files and self.distill.rounds < 1:
            raise ValueError("given teachers need rounds >= 1: the distilled EAN is what gets pruned")

    def to_dict(self) -> dict:
        return {"teacher": asdict(self.teacher), "optim": self.optim.to_dict(), "distill": self.distill.to_dict(),
                "prune": self.prune.to_dict(), "export": asdict(self.export)}

    def student_key(self, teacher: str) -> str:
        """What makes a distilled student, hashed: its teacher (the bytes' sha256) and every setting of the
        stages that trained it, so a student made by any other recipe is never reused for this one."""
        made_by = {"teacher": teacher, "optim": self.optim.to_dict(), "distill": self.distill.to_dict()}
        return hashlib.sha256(json.dumps(made_by, sort_keys=True).encode()).hexdigest()
