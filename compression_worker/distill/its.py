"""The ITS pipeline stage: round 0 trains a teacher on hard labels; each later round's student learns from
the previous round's soft labels (refined across rounds) and becomes the next teacher.

Work directory layout, one folder per round, each complete once its metrics.json exists:
    round0/ model.pt metrics.json (+ trainer checkpoints)
    round1/ soft_labels.npz refined_labels.npz model.pt metrics.json
    ...
    its.json   per-round metrics and the settings
A rerun skips finished rounds and resumes an unfinished one at its last epoch.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from compression_worker.distill.loss import kd_criterion
from compression_worker.distill.soft_labels import SoftLabelSpec, load_cached, refine, save_cached, teacher_soft_labels
from compression_worker.model.ean import EAN, PRESETS
from compression_worker.provenance import git_commit
from compression_worker.training.checkpoint import load_model, save_model
from compression_worker.training.run import DataConfig, DataSplits, load_splits, model_metrics, write_stage_summary
from compression_worker.training.trainer import OptimConfig, Trainer


@dataclass(frozen=True)
class ITSConfig:
    arch: str = "ean-s"
    rounds: int = 3
    temperature: float = 4.0
    alpha: float = 0.7
    weight_transfer: bool = True
    refine: str = "latest"  # latest | average
    mirror_soft_labels: bool = True
    restart_lr: float = 0.05  # peak learning rate of a warm-restarted round (weight transfer)
    teacher: Path | None = None  # an existing model to use as round 0 instead of training one

    def __post_init__(self) -> None:
        if self.arch not in PRESETS:
            raise ValueError(f"unknown architecture {self.arch!r}; choose from {sorted(PRESETS)}")
        if self.rounds < 0 or self.temperature <= 0 or not 0.0 <= self.alpha <= 1.0:
            raise ValueError("rounds must be >= 0, temperature > 0 and alpha in [0, 1]")
        if self.refine not in ("latest", "average"):
            raise ValueError(f"unknown soft-label refinement {self.refine!r}; use latest or average")

    def to_dict(self) -> dict:
        return {**asdict(self), "teacher": str(self.teacher) if self.teacher else None}


def _round0(cfg: ITSConfig, optim: OptimConfig, splits: DataSplits, workdir: Path, device: torch.device) -> EAN:
    folder = workdir / "round0"
    if cfg.teacher is not None:
        teacher = load_model(cfg.teacher)
        source = str(cfg.teacher)
    else:
        torch.manual_seed(optim.seed)
        Trainer(EAN(PRESETS[cfg.arch]), optim, folder, device).fit(splits.train, splits.val)
        teacher = load_model(folder / "best.pt")
        source = "trained on hard labels"
    save_model(teacher, folder / "model.pt")
    metrics = model_metrics(teacher, splits, device, {"round": 0, "teacher": source})
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return teacher


def initial_student(teacher: EAN, cfg: ITSConfig, seed: int) -> EAN:
    """With weight transfer the student starts as an exact copy of the teacher, else from a fresh seeded init."""
    if cfg.weight_transfer:
        return copy.deepcopy(teacher)
    torch.manual_seed(seed)
    return EAN(PRESETS[cfg.arch])


def _student_round(
    k: int, cfg: ITSConfig, optim: OptimConfig, splits: DataSplits, workdir: Path, device: torch.device, previous: np.ndarray | None
) -> tuple[EAN, np.ndarray]:
    folder = workdir / f"round{k}"
    teacher = load_model(workdir / f"round{k - 1}" / "model.pt")
    spec = SoftLabelSpec(cfg.temperature, cfg.mirror_soft_labels)
    soft = load_cached(folder / "soft_labels.npz", splits.train.x, spec)
    if soft is None:
        soft = teacher_soft_labels(teacher, splits.train.x, spec, device)
        save_cached(folder / "soft_labels.npz", soft, splits.train.x, spec)
    refined = refine(previous, soft, cfg.refine, k)
    save_cached(folder / "refined_labels.npz", refined, splits.train.x, spec)
    student = initial_student(teacher, cfg, seed=optim.seed + k)
    round_optim = replace(optim, lr=cfg.restart_lr if cfg.weight_transfer else optim.lr, seed=optim.seed + k)
    criterion = kd_criterion(torch.from_numpy(refined).to(device), cfg.alpha, cfg.temperature, optim.label_smoothing)
    Trainer(student, round_optim, folder, device, criterion=criterion).fit(splits.train, splits.val)
    best = load_model(folder / "best.pt")
    save_model(best, folder / "model.pt")
    soft_agreement = float(np.mean(refined.argmax(1) == splits.train.y))
    metrics = model_metrics(best, splits, device, {"round": k, "soft_label_train_agreement": soft_agreement})
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return best, refined


def run_its(cfg: ITSConfig, data: DataConfig, optim: OptimConfig, workdir: Path, device: torch.device) -> dict:
    """Run (or resume) all rounds; returns and writes workdir/its.json."""
    workdir.mkdir(parents=True, exist_ok=True)
    source_commit = git_commit()
    splits = load_splits(data)
    previous: np.ndarray | None = None
    rounds: list[dict] = []
    for k in range(cfg.rounds + 1):
        folder = workdir / f"round{k}"
        done = folder / "metrics.json"
        if done.exists():
            print(f"round {k}: already done, skipping", flush=True)
            if k > 0:
                previous = np.load(folder / "refined_labels.npz")["probs"]
        elif k == 0:
            print("round 0: teacher on hard labels", flush=True)
            _round0(cfg, optim, splits, workdir, device)
        else:
            print(f"round {k}: student from round {k - 1}'s soft labels (T={cfg.temperature}, alpha={cfg.alpha}, "
                  f"{'weight transfer' if cfg.weight_transfer else 'from scratch'}, refine={cfg.refine})", flush=True)
            _, previous = _student_round(k, cfg, optim, splits, workdir, device, previous)
        rounds.append(json.loads(done.read_text()))
        test = f", test {rounds[-1]['test_acc'] * 100:.2f}%" if "test_acc" in rounds[-1] else ""
        print(f"round {k}: val {rounds[-1]['val_acc'] * 100:.2f}%{test}", flush=True)
    final = workdir / f"round{cfg.rounds}"
    return write_stage_summary(workdir / "its.json", final, source_commit, data, optim, its=cfg.to_dict(), rounds=rounds,
                               final_model=str(final / "model.pt"))
