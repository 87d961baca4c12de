"""The epoch loop: seeded, channels_last, resumable at every epoch, with a per-epoch log.

The loss is pluggable (`Criterion`): it gets the student's logits and the whole `Batch` (the augmented,
possibly mixed input, the hard labels, the faces' indices and how they were mixed), so supervised
training uses cross-entropy, cached distillation reads soft labels by index, and consistent distillation
runs the teacher on exactly the input the student saw. Optional: mixup/CutMix, an EMA of the weights
(what is validated and kept), bf16 autocast (`precision`: on a GPU, and on a CPU with AMX or AVX512-BF16).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from compression_worker.data.augment import augment_faces
from compression_worker.data.mixing import Mix, mix_batch
from compression_worker.training.checkpoint import save_atomic, save_model
from compression_worker.training.precision import autocast, describe_precision, resolve_precision
from compression_worker.training.progress import report_epoch
from compression_worker.training.schedule import warmup_cosine
from edgefer.classification_report import ClassificationReport
from edgefer.datasets import Faces
from edgefer.jobs.recipe import OptimConfig


@dataclass(frozen=True)
class Batch:
    """One training step's data as the student sees it."""

    x: torch.Tensor  # (N, 1, 48, 48) float raw pixels after augmentation and mixing, channels_last
    y: torch.Tensor  # hard labels of the faces before mixing
    indices: torch.Tensor  # the faces' positions in the training set
    mix: Mix | None = None
    view: torch.Tensor | None = None  # with stored views: which view of each face (compression_worker/distill/views.py)

    def blend(self, per_face: torch.Tensor) -> torch.Tensor:
        """Per-face target rows (soft labels, one-hot) mixed the way the inputs were."""
        return self.mix.blend(per_face) if self.mix is not None else per_face


class Criterion(Protocol):
    def __call__(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor: ...


class Inputs(Protocol):
    """Where a step's batch comes from: the faces at `idx`, augmented and mixed on the fly, or stored views."""

    def __call__(self, x_all: torch.Tensor, y_all: torch.Tensor, idx: torch.Tensor, epoch: int,
                 generator: torch.Generator) -> Batch: ...


def augmented_inputs(cfg: OptimConfig) -> Inputs:
    """The faces augmented and mixed on the fly, a new random view every time (the default)."""

    def make(x_all: torch.Tensor, y_all: torch.Tensor, idx: torch.Tensor, epoch: int,
             generator: torch.Generator) -> Batch:
        xb, mix = mix_batch(augment_faces(x_all[idx].float().unsqueeze(1), cfg.augment, generator), cfg.mix, generator)
        return Batch(xb.contiguous(memory_format=torch.channels_last), y_all[idx], idx, mix)

    return make


def batch_cross_entropy(logits: torch.Tensor, batch: Batch, label_smoothing: float) -> torch.Tensor:
    """Cross-entropy on the hard labels, mixed with the same weight as the inputs when the batch was mixed."""
    ce = F.cross_entropy(logits, batch.y, label_smoothing=label_smoothing)
    if batch.mix is None:
        return ce
    other = F.cross_entropy(logits, batch.y[batch.mix.perm], label_smoothing=label_smoothing)
    return batch.mix.lam * ce + (1.0 - batch.mix.lam) * other


def hard_label_loss(label_smoothing: float) -> Criterion:
    def loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return batch_cross_entropy(logits, batch, label_smoothing)

    return loss


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float
    raw_val_acc: float | None = None  # with an EMA: the trained weights' own accuracy (val_acc is the EMA's)

    def line(self, epochs: int) -> str:
        raw = f" (raw {self.raw_val_acc * 100:5.2f}%)" if self.raw_val_acc is not None else ""
        return (
            f"epoch {self.epoch:3d}/{epochs} loss {self.train_loss:.4f} acc {self.train_acc * 100:5.2f}% | "
            f"val loss {self.val_loss:.4f} acc {self.val_acc * 100:5.2f}%{raw} | lr {self.lr:.5f} | {self.seconds:.1f}s"
        )


@dataclass
class FitResult:
    best_val_acc: float
    best_epoch: int
    history: list[EpochLog]
    seconds_per_epoch: float


def _make_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """No weight decay on BatchNorm, biases and the 1-D ECA kernels: decaying them only hurts."""
    decay = [p for p in model.parameters() if p.ndim == 4 or p.ndim == 2]
    no_decay = [p for p in model.parameters() if not (p.ndim == 4 or p.ndim == 2)]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


@torch.no_grad()
def predict_logits(
    model: nn.Module, x: np.ndarray, device: torch.device, batch_size: int = 512, hflip_average: bool = False
) -> np.ndarray:
    """Eval-mode logits for uint8 faces (N, 48, 48); optionally averaged with the mirrored face."""
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        batch = torch.from_numpy(x[i : i + batch_size]).to(device).float().unsqueeze(1)
        logits = model(batch.contiguous(memory_format=torch.channels_last)).float()
        if hflip_average:
            flipped = batch.flip(3).contiguous(memory_format=torch.channels_last)
            logits = (logits + model(flipped).float()) / 2
        out.append(logits.cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, model.config.num_classes), np.float32)


def evaluate_model(model: nn.Module, faces: Faces, device: torch.device) -> ClassificationReport:
    """One-pass (no mirror) classification report of a PyTorch model."""
    return ClassificationReport.from_predictions(faces.y, predict_logits(model.to(device), faces.x, device).argmax(1))


def ema_with_warmup(decay: float):
    """AveragedModel's update with timm's warm-up: the decay grows as min(decay, (1 + n) / (10 + n)), so the
    average forgets the random initialisation within the first epochs instead of carrying it for thousands of steps."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor | int) -> None:
        if not torch.is_floating_point(averaged[0]):  # BatchNorm's step counters: taken as they are
            torch._foreach_copy_(averaged, current)
            return
        n = float(num_averaged)
        torch._foreach_lerp_(averaged, current, 1.0 - min(decay, (1.0 + n) / (10.0 + n)))

    return update


class Trainer:
    """Trains `model` on `train` and selects the epoch by `val`, checkpointing into `workdir`."""

    def __init__(
        self,
        model: nn.Module,
        cfg: OptimConfig,
        workdir: Path,
        device: torch.device,
        criterion: Criterion | None = None,
        inputs: Inputs | None = None,
    ) -> None:
        self.model = model.to(device).to(memory_format=torch.channels_last)
        self.cfg = cfg
        self.workdir = workdir
        self.device = device
        self.criterion = criterion or hard_label_loss(cfg.label_smoothing)
        self.inputs = inputs or augmented_inputs(cfg)
        self.optimizer = _make_optimizer(self.model, cfg)
        self.ema = (
            AveragedModel(self.model, multi_avg_fn=ema_with_warmup(cfg.ema_decay), use_buffers=True)
            if cfg.ema_decay > 0
            else None
        )
        self.precision = resolve_precision(cfg.precision, device, model)
        self.last_path = workdir / "last.pt"
        self.best_path = workdir / "best.pt"

    @property
    def kept_model(self) -> nn.Module:
        """What is validated, checkpointed as best and shipped: the EMA weights when enabled."""
        return self.ema.module if self.ema is not None else self.model

    def _validate(self, val: Faces) -> tuple[float, list[float]]:
        """Val loss of the kept model and the accuracy of each candidate: the kept model, then (with an EMA)
        the raw weights. The EMA's running BatchNorm statistics lag its weights while they still move fast
        (early epochs), so the raw weights can validate better then; the better one is kept as best."""
        models = [self.kept_model] + ([self.model] if self.ema is not None else [])
        logits = [predict_logits(m, val.x, self.device) for m in models]
        loss = float(F.cross_entropy(torch.from_numpy(logits[0]), torch.from_numpy(val.y)))
        return loss, [float(np.mean(out.argmax(1) == val.y)) for out in logits]

    def fit(self, train: Faces, val: Faces) -> FitResult:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.cfg
        x_all = torch.from_numpy(train.x).to(self.device)
        y_all = torch.from_numpy(train.y).to(self.device)
        steps_per_epoch = max(1, len(train) // cfg.batch_size)
        total_steps = steps_per_epoch * cfg.epochs
        warmup_steps = int(cfg.warmup_epochs * steps_per_epoch)
        history, best_acc, best_epoch, start = self._resume()
        print(f"training in {describe_precision(self.precision, self.device)}", flush=True)
        with (self.workdir / "history.jsonl").open("a") as log_file:
            for epoch in range(start, cfg.epochs):
                t0 = time.perf_counter()
                gen = torch.Generator(device=self.device).manual_seed(cfg.seed * 100_003 + epoch)
                order = torch.randperm(len(train), device=self.device, generator=gen)
                self.model.train()
                loss_sum = torch.zeros((), device=self.device)
                correct = torch.zeros((), device=self.device, dtype=torch.long)
                seen = 0
                bar = tqdm(
                    range(steps_per_epoch),
                    desc=f"epoch {epoch + 1}/{cfg.epochs}",
                    leave=False,
                    disable=not sys.stderr.isatty(),
                    mininterval=1.0,
                )
                for step_in_epoch in bar:
                    step = epoch * steps_per_epoch + step_in_epoch
                    lr = warmup_cosine(step, total_steps, warmup_steps, cfg.lr, cfg.final_lr_ratio)
                    for group in self.optimizer.param_groups:
                        group["lr"] = lr
                    idx = order[step_in_epoch * cfg.batch_size : (step_in_epoch + 1) * cfg.batch_size]
                    batch = self.inputs(x_all, y_all, idx, epoch, gen)
                    with autocast(self.device, self.precision):
                        logits = self.model(batch.x)
                        loss = self.criterion(logits.float(), batch)
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    self.optimizer.step()
                    if self.ema is not None:
                        self.ema.update_parameters(self.model)
                    loss_sum += loss.detach() * len(idx)
                    correct += (logits.argmax(1) == batch.y).sum()
                    seen += len(idx)
                val_loss, accuracies = self._validate(val)
                entry = EpochLog(
                    epoch=epoch + 1,
                    train_loss=float(loss_sum) / seen,
                    train_acc=float(correct) / seen,
                    val_loss=val_loss,
                    val_acc=accuracies[0],
                    lr=lr,
                    seconds=time.perf_counter() - t0,
                    raw_val_acc=accuracies[1] if len(accuracies) > 1 else None,
                )
                history.append(entry)
                if max(accuracies) > best_acc:
                    best_acc, best_epoch = max(accuracies), epoch + 1
                    use_ema = self.ema is not None and accuracies[0] >= accuracies[-1]
                    kept = self.kept_model if use_ema else self.model
                    save_model(kept, self.best_path, {"val_acc": best_acc, "epoch": best_epoch, "ema": use_ema})
                self._save_last(epoch + 1, history, best_acc, best_epoch)
                print(entry.line(cfg.epochs), flush=True)
                log_file.write(json.dumps(asdict(entry)) + "\n")
                log_file.flush()
                report_epoch(epoch + 1, cfg.epochs, asdict(entry))
        seconds = [h.seconds for h in history]
        return FitResult(best_acc, best_epoch, history, float(np.median(seconds)) if seconds else 0.0)

    def _save_last(self, epochs_done: int, history: list[EpochLog], best_acc: float, best_epoch: int) -> None:
        save_atomic(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "epochs_done": epochs_done,
                "history": [asdict(h) for h in history],
                "best_acc": best_acc,
                "best_epoch": best_epoch,
                "optim_config": self.cfg.to_dict(),
            },
            self.last_path,
        )

    def _resume(self) -> tuple[list[EpochLog], float, int, int]:
        """Continue from last.pt when it exists (same settings), else start fresh."""
        if not self.last_path.exists():
            (self.workdir / "history.jsonl").unlink(missing_ok=True)
            return [], -1.0, 0, 0
        state = torch.load(self.last_path, map_location=self.device, weights_only=False)
        if state["optim_config"] != self.cfg.to_dict():
            raise ValueError(
                f"{self.last_path}: checkpoint was made with other training settings; "
                "use a new work directory or --fresh to start over"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        history = [EpochLog(**h) for h in state["history"]]
        with (self.workdir / "history.jsonl").open("w") as log_file:  # drop lines of an epoch cut short
            log_file.writelines(json.dumps(asdict(h)) + "\n" for h in history)
        print(f"resuming from {self.last_path} after epoch {state['epochs_done']}", flush=True)
        return history, state["best_acc"], state["best_epoch"], state["epochs_done"]
