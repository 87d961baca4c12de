"""The epoch loop: seeded, channels_last, resumable at every epoch, with a per-epoch log.

The loss is pluggable (`Criterion`): supervised training uses cross-entropy on hard labels, and the
distillation stage plugs in a loss that also reads per-face soft labels through the batch indices.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from compression_worker.data.augment import AugmentConfig, augment_faces
from compression_worker.model.ean import EAN
from compression_worker.training.checkpoint import save_atomic, save_model
from compression_worker.training.progress import report_epoch
from compression_worker.training.schedule import warmup_cosine
from edgefer.datasets import Faces
from edgefer.metrics import ClassificationReport


class Criterion(Protocol):
    def __call__(self, logits: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor) -> torch.Tensor: ...


def hard_label_loss(label_smoothing: float) -> Criterion:
    def loss(logits: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)

    return loss


@dataclass(frozen=True)
class OptimConfig:
    """Everything that shapes one training run besides the model and the data."""

    epochs: int = 55
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd (Nesterov) or adamw
    lr: float = 0.1
    weight_decay: float = 5e-4
    momentum: float = 0.9
    warmup_epochs: float = 1.0
    final_lr_ratio: float = 0.0
    label_smoothing: float = 0.0
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be sgd or adamw, got {self.optimizer!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs, batch_size and lr must be positive")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float

    def line(self, epochs: int) -> str:
        return (
            f"epoch {self.epoch:3d}/{epochs} loss {self.train_loss:.4f} acc {self.train_acc * 100:5.2f}% | "
            f"val loss {self.val_loss:.4f} acc {self.val_acc * 100:5.2f}% | lr {self.lr:.5f} | {self.seconds:.1f}s"
        )


@dataclass
class FitResult:
    best_val_acc: float
    best_epoch: int
    history: list[EpochLog]
    seconds_per_epoch: float


def _make_optimizer(model: EAN, cfg: OptimConfig) -> torch.optim.Optimizer:
    """No weight decay on BatchNorm, biases and the 1-D ECA kernels: decaying them only hurts."""
    decay = [p for p in model.parameters() if p.ndim == 4 or p.ndim == 2]
    no_decay = [p for p in model.parameters() if not (p.ndim == 4 or p.ndim == 2)]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


@torch.no_grad()
def predict_logits(
    model: EAN, x: np.ndarray, device: torch.device, batch_size: int = 512, hflip_average: bool = False
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


def evaluate_model(model: EAN, faces: Faces, device: torch.device) -> ClassificationReport:
    """One-pass (no mirror) classification report of a PyTorch model."""
    return ClassificationReport.from_predictions(faces.y, predict_logits(model.to(device), faces.x, device).argmax(1))


class Trainer:
    """Trains `model` on `train` and selects the epoch by `val`, checkpointing into `workdir`."""

    def __init__(
        self,
        model: EAN,
        cfg: OptimConfig,
        workdir: Path,
        device: torch.device,
        criterion: Criterion | None = None,
    ) -> None:
        self.model = model.to(device).to(memory_format=torch.channels_last)
        self.cfg = cfg
        self.workdir = workdir
        self.device = device
        self.criterion = criterion or hard_label_loss(cfg.label_smoothing)
        self.optimizer = _make_optimizer(self.model, cfg)
        self.last_path = workdir / "last.pt"
        self.best_path = workdir / "best.pt"

    def fit(self, train: Faces, val: Faces) -> FitResult:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.cfg
        x_all = torch.from_numpy(train.x).to(self.device)
        y_all = torch.from_numpy(train.y).to(self.device)
        steps_per_epoch = max(1, len(train) // cfg.batch_size)
        total_steps = steps_per_epoch * cfg.epochs
        warmup_steps = int(cfg.warmup_epochs * steps_per_epoch)
        history, best_acc, best_epoch, start = self._resume()
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
                    xb = augment_faces(x_all[idx].float().unsqueeze(1), cfg.augment, gen)
                    xb = xb.contiguous(memory_format=torch.channels_last)
                    yb = y_all[idx]
                    logits = self.model(xb)
                    loss = self.criterion(logits, yb, idx)
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    self.optimizer.step()
                    loss_sum += loss.detach() * len(idx)
                    correct += (logits.argmax(1) == yb).sum()
                    seen += len(idx)
                val_logits = predict_logits(self.model, val.x, self.device)
                val_loss = float(F.cross_entropy(torch.from_numpy(val_logits), torch.from_numpy(val.y)))
                val_acc = float(np.mean(val_logits.argmax(1) == val.y))
                entry = EpochLog(
                    epoch=epoch + 1,
                    train_loss=float(loss_sum) / seen,
                    train_acc=float(correct) / seen,
                    val_loss=val_loss,
                    val_acc=val_acc,
                    lr=lr,
                    seconds=time.perf_counter() - t0,
                )
                history.append(entry)
                if val_acc > best_acc:
                    best_acc, best_epoch = val_acc, epoch + 1
                    save_model(self.model, self.best_path, {"val_acc": val_acc, "epoch": epoch + 1})
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
        history = [EpochLog(**h) for h in state["history"]]
        with (self.workdir / "history.jsonl").open("w") as log_file:  # drop lines of an epoch cut short
            log_file.writelines(json.dumps(asdict(h)) + "\n" for h in history)
        print(f"resuming from {self.last_path} after epoch {state['epochs_done']}", flush=True)
        return history, state["best_acc"], state["best_epoch"], state["epochs_done"]
