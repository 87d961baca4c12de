"""The `prune` stage: importance -> per-layer keep counts -> DepGraph surgery -> local retraining -> fine-tune.

Work directory, one folder per pruning step (several smaller steps when `steps` > 1), each complete
once its metrics.json exists; a rerun skips finished steps and resumes training at its last epoch:
    soft_labels.npz            cached mode: the teacher's soft labels (the unpruned model, or --teacher), cached
    views/                     views mode: the teacher's stored augmented views (or --prune.view-cache)
    step1/ pruned.pt plan.json local/ finetune/ model.pt metrics.json
    prune.json                 per-step metrics, the settings and the command
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from compression_worker.distill.loss import consistent_kd_criterion, kd_criterion
from compression_worker.distill.soft_labels import SoftLabelSpec, cached_soft_labels
from compression_worker.distill.teachers import Teacher, TorchTeacher, load_teachers
from compression_worker.distill.views import ViewInputs, refuse_mixing, teacher_views, view_kd_criterion
from compression_worker.model.ean import EAN
from compression_worker.provenance import git_commit
from compression_worker.prune.importance import make_importance
from compression_worker.prune.ratios import RatioPolicy, plan_keep
from compression_worker.prune.retrain import changed_modules, only_training
from compression_worker.prune.structure import channel_dims, dependency_graph, eca_kernels_of, macs_of, prune_channels
from compression_worker.training.checkpoint import load_model, save_model
from compression_worker.training.resumable import note_test_accuracy, run_resumable_steps, write_json_atomic
from compression_worker.training.run import DataConfig, DataSplits, load_splits, model_metrics, write_stage_summary
from compression_worker.training.trainer import Criterion, Inputs, OptimConfig, Trainer
from edgefer.datasets import data_sha256
from edgefer.jobs.recipe import PruneConfig


def ratio_policy(cfg: PruneConfig) -> RatioPolicy:
    return RatioPolicy(cfg.ratios, cfg.min_keep_fraction, max_ratio=cfg.max_ratio, channel_multiple=cfg.channel_multiple)


def layer_report(model: EAN, keep: dict[str, int], cfg: PruneConfig) -> list[dict]:
    """Per channel dimension: channels before and after, ratio, and importance statistics."""
    dims = channel_dims(model, dependency_graph(model), make_importance(cfg.importance, cfg.l2_weight))
    rows = []
    for dim in dims:
        order = torch.sort(dim.scores).values
        drop = dim.channels - keep[dim.key]
        rows.append({
            "layer": dim.key,
            "before": dim.channels,
            "after": keep[dim.key],
            "ratio": drop / dim.channels,
            "score_min": float(order[0]),
            "score_mean": float(order.mean()),
            "score_max": float(order[-1]),
            "threshold": float(order[drop]) if drop < dim.channels else None,
        })
    return rows


def format_report(rows: list[dict]) -> str:
    lines = [f"{'layer':<8} {'before':>6} {'after':>6} {'ratio':>6} {'score min':>9} {'mean':>6} {'max':>6} {'kept from':>9}"]
    for r in rows:
        kept = f"{r['threshold']:.3f}" if r["threshold"] is not None else "-"
        lines.append(f"{r['layer']:<8} {r['before']:>6} {r['after']:>6} {100 * r['ratio']:>5.1f}% "
                     f"{r['score_min']:>9.3f} {r['score_mean']:>6.3f} {r['score_max']:>6.3f} {kept:>9}")
    return "\n".join(lines)


def _prune_step(current: EAN, reference_macs: int, goal: float, cfg: PruneConfig, folder: Path) -> EAN:
    """Plan and cut one step (or load the cut made before a restart)."""
    if (folder / "pruned.pt").exists():
        return load_model(folder / "pruned.pt")
    importance = make_importance(cfg.importance, cfg.l2_weight)
    torch.manual_seed(0)  # the random criterion is seeded too
    dims = channel_dims(current, dependency_graph(current), importance)
    step_reduction = 1 - (1 - goal) * reference_macs / macs_of(current.config)
    keep = plan_keep(current.config, eca_kernels_of(current), dims, step_reduction, ratio_policy(cfg))
    rows = layer_report(current, keep, cfg)
    pruned = prune_channels(current, keep, importance)
    print(format_report(rows), flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plan.json").write_text(json.dumps({"keep": keep, "layers": rows}, indent=2))
    save_model(pruned, folder / "pruned.pt")
    return pruned


def _retrain(pruned: EAN, before: EAN, cfg: PruneConfig, optim: OptimConfig, splits: DataSplits,
             criterion: Criterion, inputs: Inputs | None, folder: Path, device: torch.device) -> EAN:
    model = pruned
    local_epochs = cfg.local_epochs if cfg.local_retraining else 0
    finetune_epochs = cfg.finetune_epochs + (0 if cfg.local_retraining else cfg.local_epochs)
    if local_epochs:
        touched = changed_modules(before, pruned)
        with only_training(model, touched) as trainable:
            print(f"local retraining: {len(trainable)} tensors of {len(touched)} touched layers, the rest frozen", flush=True)
            Trainer(model, replace(optim, epochs=local_epochs), folder / "local", device, criterion,
                    inputs=inputs).fit(splits.train, splits.val)
        model = load_model(folder / "local" / "best.pt")
    if finetune_epochs:
        print("fine-tuning the whole network", flush=True)
        Trainer(model, replace(optim, epochs=finetune_epochs), folder / "finetune", device, criterion,
                inputs=inputs).fit(splits.train, splits.val)
        model = load_model(folder / "finetune" / "best.pt")
    return model


def _cached_criterion(teacher: Teacher, teacher_paths: list[Path], cfg: PruneConfig, optim: OptimConfig,
                      splits: DataSplits, workdir: Path, device: torch.device) -> Criterion:
    """Soft labels computed once (cached, keyed by the teacher files' sha256) and read by face index."""
    key = ",".join(data_sha256(p) for p in teacher_paths)
    spec = SoftLabelSpec(cfg.temperature, mirror_average=True, teacher_sha256=key)
    soft = cached_soft_labels(workdir / "soft_labels.npz", teacher, splits.train.x, spec, device)
    return kd_criterion(torch.from_numpy(soft).to(device), cfg.alpha, cfg.temperature, optim.label_smoothing)


def run_prune(model_path: Path, cfg: PruneConfig, data: DataConfig, optim: OptimConfig, workdir: Path,
              device: torch.device, threads: int) -> dict:
    """Run (or resume) every step; returns and writes workdir/prune.json (and summary.json beside the model);
    `threads`: onnxruntime's, for graph teachers."""
    if cfg.target_macs_reduction is None:
        raise ValueError("pruning needs a target: the share of MACs to remove (--prune.target)")
    if cfg.lr is not None:
        optim = replace(optim, lr=cfg.lr)
    workdir.mkdir(parents=True, exist_ok=True)
    source_commit = git_commit()
    unpruned = load_model(model_path)
    splits = load_splits(data)
    teacher_paths = [Path(t) for t in cfg.teachers] or [model_path]
    teacher: Teacher = (load_teachers(cfg.teachers, device, threads) if cfg.teachers
                        else TorchTeacher(unpruned, device, name=str(model_path)))
    inputs: Inputs | None = None
    if cfg.distill_mode == "consistent":
        criterion = consistent_kd_criterion(teacher, cfg.alpha, cfg.temperature, optim.label_smoothing)
    elif cfg.distill_mode == "views":
        refuse_mixing(optim.mix)
        views = teacher_views(cfg.view_cache or workdir / "views", teacher, teacher_paths, cfg.views, optim.augment,
                              splits.train.x, device)
        criterion = view_kd_criterion(views, cfg.alpha, cfg.temperature, optim.label_smoothing)
        inputs = ViewInputs(views, seed=optim.seed)
    else:
        criterion = _cached_criterion(teacher, teacher_paths, cfg, optim, splits, workdir, device)
    reference = macs_of(unpruned.config)
    current = unpruned

    def run(k: int, folder: Path) -> None:
        nonlocal current
        goal = 1 - (1 - cfg.target_macs_reduction) ** (k / cfg.steps)
        print(f"step {k}/{cfg.steps}: prune to {100 * (1 - goal):.1f}% of the MACs ({cfg.importance}, {cfg.ratios} ratios)")
        pruned = _prune_step(current, reference, goal, cfg, folder)
        current = _retrain(pruned, current, cfg, optim, splits, criterion, inputs, folder, device)
        save_model(current, folder / "model.pt")
        metrics = model_metrics(current, splits, device, {"step": k, "macs": macs_of(current.config)})
        write_json_atomic(folder / "metrics.json", metrics)

    def resume(k: int, folder: Path) -> None:
        nonlocal current
        current = load_model(folder / "model.pt")

    def describe(m: dict) -> str:
        return f"{m['params']:,} params, {m['macs'] / 1e6:.2f}M MACs/pass, val {100 * m['val_acc']:.2f}%{note_test_accuracy(m)}"

    steps = [model_metrics(unpruned, splits, device, {"step": 0, "macs": reference})]
    steps += run_resumable_steps(workdir, "step", range(1, cfg.steps + 1), run, resume, describe)
    final = workdir / f"step{cfg.steps}"
    return write_stage_summary(workdir / "prune.json", final, source_commit, data, optim, pruned_from=str(model_path),
                               teacher=" + ".join(str(p) for p in teacher_paths),
                               prune=cfg.to_dict(), steps=steps, final_model=str(final / "model.pt"))
