"""The ITS pipeline stage: round 0 is the teacher; each later round's student learns from the teacher of
the round before (refined across rounds) and becomes the next teacher.

Round 0 is either trained here on hard labels (the student's architecture) or given: one or more
files (`teachers`: zoo checkpoints of any architecture, or exported .onnx graphs; several are an
averaged ensemble). Two ways to learn from a teacher (`mode`):
    cached      soft labels computed once per round on the un-augmented faces, read by index
                (cheap: a CPU budget), refined across rounds by `refine` (latest | average)
    consistent  the teacher runs on the student's own augmented and mixed batch every step
                (function matching); refine=average makes every earlier teacher join an ensemble
    views       the teacher labels K stored augmented views of every face once, the student trains on those
                (compression_worker/distill/views.py: a CPU's way to function matching; refine as consistent)
A student starts from the previous round's weights when the architectures match (weight transfer, with a
warm-restarted schedule at `restart_lr`), else from `student_init` or a fresh seeded init.

Work directory layout, one folder per round, each complete once its metrics.json exists:
    round0/ model.pt (when round 0 is an EAN checkpoint) metrics.json
    round1/ [soft_labels.npz refined_labels.npz] model.pt metrics.json (+ trainer checkpoints)
    ...
    its.json   per-round metrics and the settings
A rerun skips finished rounds and resumes an unfinished one at its last epoch.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from compression_worker.distill.loss import consistent_kd_criterion, kd_criterion
from compression_worker.distill.soft_labels import SoftLabelSpec, cached_soft_labels, refine, save_cached
from compression_worker.distill.teachers import EnsembleTeacher, Teacher, TorchTeacher, load_teachers, teacher_report
from compression_worker.distill.views import StoredViews, ViewInputs, refuse_mixing, teacher_views, view_kd_criterion
from compression_worker.model.ean import EAN
from compression_worker.provenance import git_commit
from compression_worker.training.checkpoint import load_model, load_network, save_model
from compression_worker.training.resumable import note_test_accuracy, run_resumable_steps, write_json_atomic
from compression_worker.training.run import DataConfig, DataSplits, load_splits, model_metrics, write_stage_summary
from compression_worker.training.trainer import Criterion, OptimConfig, Trainer
from edgefer.jobs.architectures import PRESETS
from edgefer.jobs.recipe import ITSConfig


def _round0(
    cfg: ITSConfig, optim: OptimConfig, splits: DataSplits, workdir: Path, device: torch.device, threads: int
) -> None:
    """Train or adopt the round-0 teacher and record its accuracy; an EAN teacher is kept as round0/model.pt."""
    folder = workdir / "round0"
    folder.mkdir(parents=True, exist_ok=True)
    if not cfg.teachers:
        torch.manual_seed(optim.seed)
        Trainer(EAN(PRESETS[cfg.arch]), optim, folder, device).fit(splits.train, splits.val)
        teacher = load_model(folder / "best.pt")
        save_model(teacher, folder / "model.pt")
        metrics = model_metrics(teacher, splits, device, {"round": 0, "teacher": "trained on hard labels"})
    else:
        given = load_teachers(cfg.teachers, device, threads, cfg.mirror_soft_labels)
        if isinstance(given, TorchTeacher) and isinstance(given.model, EAN):  # one EAN: its weights can transfer
            save_model(given.model, folder / "model.pt")
        metrics = {"round": 0, "teacher": given.name, **_teacher_accuracy(given, splits, device)}
    write_json_atomic(folder / "metrics.json", metrics)


def _teacher_accuracy(teacher: Teacher, splits: DataSplits, device: torch.device) -> dict:
    metrics = {"val_acc": teacher_report(teacher, splits.val, device).accuracy}
    if splits.test is not None:
        report = teacher_report(teacher, splits.test, device)
        metrics |= {"test_acc": report.accuracy, "test_per_class_recall": report.per_class_recall}
    return metrics


def _teacher_of_round(k: int, cfg: ITSConfig, workdir: Path, device: torch.device, threads: int) -> Teacher:
    """Round k's teacher: round k-1's model; with refine=average every earlier teacher in one ensemble."""

    def model_of(j: int) -> Teacher:
        path = workdir / f"round{j}" / "model.pt"
        if j == 0 and not path.exists():
            return load_teachers(cfg.teachers, device, threads, cfg.mirror_soft_labels)
        return TorchTeacher(load_network(path), device, cfg.mirror_soft_labels, name=f"round{j}")

    if cfg.mode in ("consistent", "views") and cfg.refine == "average" and k > 1:
        return EnsembleTeacher([model_of(j) for j in range(k)])
    return model_of(k - 1)


def initial_student(previous: EAN | None, cfg: ITSConfig, seed: int) -> tuple[EAN, bool]:
    """(student, whether it carries transferred weights): a copy of the previous model when it is an EAN of
    the student's architecture and weight transfer is on, else `student_init` or a fresh seeded init."""
    if cfg.weight_transfer and previous is not None and previous.config == PRESETS[cfg.arch]:
        return copy.deepcopy(previous), True
    if cfg.weight_transfer and cfg.student_init is not None:
        return load_model(cfg.student_init), True
    torch.manual_seed(seed)
    return EAN(PRESETS[cfg.arch]), False


def _cached_criterion(k: int, cfg: ITSConfig, teacher: Teacher, splits: DataSplits, folder: Path, device: torch.device,
                      previous: np.ndarray | None, optim: OptimConfig) -> tuple[Criterion, np.ndarray]:
    spec = SoftLabelSpec(cfg.temperature, cfg.mirror_soft_labels)
    soft = cached_soft_labels(folder / "soft_labels.npz", teacher, splits.train.x, spec, device)
    refined = refine(previous, soft, cfg.refine, k)
    save_cached(folder / "refined_labels.npz", refined, splits.train.x, spec)
    criterion = kd_criterion(torch.from_numpy(refined).to(device), cfg.alpha, cfg.temperature, optim.label_smoothing)
    return criterion, refined


def _stored_views(k: int, cfg: ITSConfig, optim: OptimConfig, teacher: Teacher, splits: DataSplits, workdir: Path,
                  device: torch.device) -> StoredViews:
    """Round k's views: made once by its teacher (round 1's in `view_cache` when given, to share between runs)."""
    def files_of(j: int) -> list[Path]:
        path = workdir / f"round{j}" / "model.pt"
        return [path] if path.exists() else [Path(t) for t in cfg.teachers]

    paths = [p for j in (range(k) if cfg.refine == "average" else [k - 1]) for p in files_of(j)]
    folder = cfg.view_cache if k == 1 and cfg.view_cache else workdir / f"round{k}" / "views"
    return teacher_views(folder, teacher, paths, cfg.views, optim.augment, splits.train.x, device)


def _student_round(
    k: int,
    cfg: ITSConfig,
    optim: OptimConfig,
    splits: DataSplits,
    workdir: Path,
    device: torch.device,
    threads: int,
    previous: np.ndarray | None,
) -> np.ndarray | None:
    folder = workdir / f"round{k}"
    teacher = _teacher_of_round(k, cfg, workdir, device, threads)
    previous_path = workdir / f"round{k - 1}" / "model.pt"
    previous_model = load_network(previous_path) if previous_path.exists() else None
    student, transferred = initial_student(previous_model if isinstance(previous_model, EAN) else None, cfg,
                                           seed=optim.seed + k)
    round_optim = replace(optim, lr=cfg.restart_lr if transferred else optim.lr, seed=optim.seed + k)
    extra: dict = {"round": k, "teacher": teacher.name, "mode": cfg.mode, "weights_transferred": transferred}
    refined, inputs = None, None
    if cfg.mode == "cached":
        criterion, refined = _cached_criterion(k, cfg, teacher, splits, folder, device, previous, optim)
        extra["soft_label_train_agreement"] = float(np.mean(refined.argmax(1) == splits.train.y))
    elif cfg.mode == "views":
        views = _stored_views(k, cfg, optim, teacher, splits, workdir, device)
        criterion = view_kd_criterion(views, cfg.alpha, cfg.temperature, optim.label_smoothing)
        inputs = ViewInputs(views, seed=round_optim.seed)
        extra["views"] = views.count
    else:
        criterion = consistent_kd_criterion(teacher, cfg.alpha, cfg.temperature, optim.label_smoothing)
    Trainer(student, round_optim, folder, device, criterion=criterion, inputs=inputs).fit(splits.train, splits.val)
    best = load_model(folder / "best.pt")
    save_model(best, folder / "model.pt")
    write_json_atomic(folder / "metrics.json", model_metrics(best, splits, device, extra))
    return refined


def run_its(
    cfg: ITSConfig, data: DataConfig, optim: OptimConfig, workdir: Path, device: torch.device, threads: int
) -> dict:
    """Run (or resume) all rounds; returns and writes workdir/its.json (`threads`: onnxruntime's, for graph
    teachers; torch's are the caller's)."""
    for path in (*cfg.teachers, *([cfg.student_init] if cfg.student_init else [])):
        if not Path(path).exists():
            raise ValueError(f"{path}: no such model file")
    if cfg.mode == "views":
        refuse_mixing(optim.mix)
    workdir.mkdir(parents=True, exist_ok=True)
    source_commit = git_commit()
    splits = load_splits(data)
    previous: np.ndarray | None = None

    def run(k: int, folder: Path) -> None:
        nonlocal previous
        if k == 0:
            print("round 0: " + ("the given teacher(s)" if cfg.teachers else "teacher on hard labels"), flush=True)
            _round0(cfg, optim, splits, workdir, device, threads)
        else:
            print(f"round {k}: {cfg.mode} distillation from round {k - 1} (T={cfg.temperature}, alpha={cfg.alpha}, "
                  f"refine={cfg.refine})", flush=True)
            previous = _student_round(k, cfg, optim, splits, workdir, device, threads, previous)

    def resume(k: int, folder: Path) -> None:
        nonlocal previous
        if k > 0 and (folder / "refined_labels.npz").exists():
            previous = np.load(folder / "refined_labels.npz")["probs"]

    rounds = run_resumable_steps(workdir, "round", range(cfg.rounds + 1), run, resume,
                                 lambda m: f"val {m['val_acc'] * 100:.2f}%{note_test_accuracy(m)}")
    final = workdir / f"round{cfg.rounds}"
    final.mkdir(parents=True, exist_ok=True)
    return write_stage_summary(workdir / "its.json", final, source_commit, data, optim, its=cfg.to_dict(), rounds=rounds,
                               final_model=str(final / "model.pt"))
