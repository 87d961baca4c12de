"""One supervised training run from data files to a model file with its summary: what `train` executes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compression_worker.model.ean import count_parameters
from compression_worker.model.zoo import arch_of, build_model
from compression_worker.provenance import git_commit, invocation
from compression_worker.training.checkpoint import load_network, save_model
from compression_worker.training.precision import describe_precision
from compression_worker.training.trainer import OptimConfig, Trainer, evaluate_model, predict_logits
from edgefer.datasets import Faces, concat_faces, data_sha256, load_faces, stratified_split
from edgefer.settings_fields import option


@dataclass(frozen=True)
class DataConfig:
    train_path: Path = option(flag="data")  # npz, fer2013.csv or class folder
    test_path: Path | None = option(None, flag="test-data")  # also report accuracy on this set (never used to choose)
    val_fraction: float = 0.1  # stratified validation split held out of the training data for every choice
    split_seed: int = 0  # seed of the validation split; fix it so that seeds of an ensemble share one split
    usage: str | None = None  # with a fer2013.csv: the Usage rows to train on (e.g. Training)
    extra_path: Path | None = option(None, flag="extra-data")  # more faces (npz, csv or class folder) to train on

    def identity(self) -> str:
        """What the data is, for the lineage: the sha256 of the training data (+ that of the extra data)."""
        usage = f"[{self.usage}]" if self.usage else ""
        return data_sha256(self.train_path) + usage + (f"+{data_sha256(self.extra_path)}" if self.extra_path else "")

    def split_rule(self) -> str:
        """How the held-back faces were drawn: models that share data identity and rule never trained on them."""
        return f"stratified:{self.val_fraction:g}:{self.split_seed}"


@dataclass(frozen=True)
class DataSplits:
    train: Faces
    val: Faces
    test: Faces | None


def load_splits(cfg: DataConfig) -> DataSplits:
    """Train and held-back faces; with extra data, each source is split on its own by the same stratified,
    seeded rule, so the faces held back from the base data stay held back whatever is merged into it (a model
    trained on the base data never trained on the union's held-back faces)."""
    sources = [load_faces(cfg.train_path, cfg.usage)] + ([load_faces(cfg.extra_path)] if cfg.extra_path else [])
    trains, vals = [], []
    for faces in sources:
        train_idx, val_idx = stratified_split(faces.y, cfg.val_fraction, cfg.split_seed)
        trains.append(faces.subset(train_idx))
        vals.append(faces.subset(val_idx))
    test = None
    if cfg.test_path is not None:  # a Kaggle csv holds every split: its PublicTest rows are the test set
        test = load_faces(cfg.test_path, "PublicTest" if cfg.test_path.suffix == ".csv" else None)
    return DataSplits(concat_faces(trains), concat_faces(vals), test)


def model_metrics(model: nn.Module, splits: DataSplits, device: torch.device, extra: dict) -> dict:
    """Params, val accuracy and (when a test set is given) test accuracy and recall of a finished model."""
    metrics = {**extra, "params": count_parameters(model), "val_acc": evaluate_model(model, splits.val, device).accuracy}
    if splits.test is not None:
        report = evaluate_model(model, splits.test, device)
        metrics["test_acc"] = report.accuracy
        metrics["test_per_class_recall"] = report.per_class_recall
    return metrics


def write_stage_summary(
    index: Path, final_dir: Path, source_commit: str, data: DataConfig, optim: OptimConfig, **stage: object
) -> dict:
    """A multi-step stage's record (command, commit, settings, data hash, per-step results), written as
    `index` and beside the final model, so that `export` puts the whole provenance into the model card."""
    summary = {
        "command": invocation(),
        "git_commit": source_commit,
        **stage,
        "optim": optim.to_dict(),
        "train_data": str(data.train_path),
        "train_data_sha256": data_sha256(data.train_path),
    }
    index.write_text(json.dumps(summary, indent=2))
    (final_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def initial_weights(arch: str, init_from: Path) -> nn.Module:
    """The network a warm restart starts from; it must have the architecture asked for, or the split and
    schedule recorded in the summary would describe another model."""
    model = load_network(init_from)
    if arch_of(model) != arch:
        raise ValueError(f"{init_from}: its architecture is {arch_of(model)}, but --arch is {arch}")
    return model


def train_model(
    arch: str,
    data: DataConfig,
    optim: OptimConfig,
    workdir: Path,
    device: torch.device,
    init_from: Path | None = None,
) -> dict:
    """Train, keep the best-on-validation weights as workdir/model.pt, and write workdir/summary.json.
    With `init_from`, the run continues from that model's weights (a warm restart of a finished schedule)."""
    source_commit = git_commit()  # taken before training: the tree may change while it runs
    torch.manual_seed(optim.seed)
    model = initial_weights(arch, init_from) if init_from is not None else build_model(arch)
    splits = load_splits(data)
    print(f"{arch}: {count_parameters(model):,} parameters; train {len(splits.train)}, val {len(splits.val)} faces", flush=True)
    trainer = Trainer(model, optim, workdir, device)
    result = trainer.fit(splits.train, splits.val)
    best = load_network(workdir / "best.pt")
    save_model(best, workdir / "model.pt", {"arch": arch})
    summary: dict = {
        "arch": arch,
        "command": invocation(),
        "git_commit": source_commit,
        "params": count_parameters(best),
        "best_val_acc": result.best_val_acc,
        "best_epoch": result.best_epoch,
        "epochs": optim.epochs,
        "seconds_per_epoch": result.seconds_per_epoch,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "precision": describe_precision(trainer.precision, device),
        "train_data": str(data.train_path),
        "train_data_sha256": data_sha256(data.train_path),
        "data_identity": data.identity(),  # with `split`: which held-back faces it never saw (the lineage's key)
        "split": data.split_rule(),
        "optim": optim.to_dict(),
        "init_from": str(init_from) if init_from is not None else None,
    }
    flip_logits = predict_logits(best.to(device), splits.val.x, device, hflip_average=True)
    summary["best_val_acc_hflip"] = float(np.mean(flip_logits.argmax(1) == splits.val.y))
    if splits.test is not None:
        report = evaluate_model(best, splits.test, device)
        summary["test"] = {"data": str(data.test_path), "data_sha256": data_sha256(data.test_path), **report.to_dict()}
        print(report.format_table(), flush=True)
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
