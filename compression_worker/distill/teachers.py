"""Teachers: anything that maps a batch of raw-pixel faces to logits, as distillation needs it.

A teacher is a PyTorch checkpoint of any zoo architecture (an EAN, a ResNet or VGG that never ships),
an exported ONNX graph run by onnxruntime (a shipped model teaches without its training checkpoint),
or an ensemble of those whose logits are averaged. Every teacher runs in eval mode without gradients,
on whatever batch it is handed: in consistent distillation that is the student's own augmented batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from compression_worker.training.checkpoint import load_network
from compression_worker.training.precision import autocast, resolve_precision
from edgefer.classification_report import ClassificationReport
from edgefer.datasets import Faces
from edgefer.onnx_model import OnnxFaceClassifier


class Teacher(Protocol):
    name: str

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """x: float (N, 1, 48, 48) raw pixels on the training device -> float32 logits (N, classes) there."""
        ...


class TorchTeacher:
    """A PyTorch network in eval mode; mirror averaging makes its targets as good as its shipped graph's.
    `precision` auto runs a dense teacher under bf16 autocast on a GPU or a bf16 CPU (2.2-4x its fp32 speed)."""

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        mirror_average: bool = True,
        name: str = "",
        precision: str = "auto",
    ) -> None:
        self.model = model.to(device).eval().to(memory_format=torch.channels_last)
        self.device = device
        self.precision = resolve_precision(precision, device, model)
        self.mirror_average = mirror_average
        self.name = name or type(model).__name__

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.precision):
            out = self.model(x).float()
            if self.mirror_average:
                out = (out + self.model(x.flip(3)).float()) * 0.5
        return out


class OnnxTeacher:
    """An exported graph (mirror averaging, when it has it, is inside the graph) run by onnxruntime on the CPU."""

    def __init__(self, path: Path, threads: int) -> None:
        self.session = OnnxFaceClassifier(path, intra_op_threads=threads)
        self.name = str(path)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.logits(x.detach().float().cpu().contiguous().numpy())
        return torch.from_numpy(out).to(x.device)


class EnsembleTeacher:
    """Averaged logits of several teachers (the refined soft labels of ITS, or a zoo ensemble)."""

    def __init__(self, members: Sequence[Teacher]) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one teacher")
        self.members = list(members)
        self.name = " + ".join(m.name for m in self.members)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m.logits(x) for m in self.members]).mean(0)


def load_teacher(path: str | Path, device: torch.device, threads: int, mirror_average: bool = True) -> Teacher:
    """A teacher from a file: .onnx runs in onnxruntime, anything else is a zoo checkpoint."""
    p = Path(path)
    if p.suffix == ".onnx":
        return OnnxTeacher(p, threads)
    return TorchTeacher(load_network(p), device, mirror_average, name=str(p))


def load_teachers(
    paths: Sequence[str | Path], device: torch.device, threads: int, mirror_average: bool = True
) -> Teacher:
    """One teacher, or the averaged ensemble of several (`threads`: onnxruntime's, for graphs)."""
    teachers = [load_teacher(p, device, threads, mirror_average) for p in paths]
    return teachers[0] if len(teachers) == 1 else EnsembleTeacher(teachers)


def teacher_logits(teacher: Teacher, faces: np.ndarray, device: torch.device, batch_size: int = 512) -> np.ndarray:
    """Logits for uint8 faces (N, 48, 48), un-augmented, in bounded batches."""
    parts = []
    for i in range(0, len(faces), batch_size):
        x = torch.from_numpy(faces[i : i + batch_size]).to(device).float().unsqueeze(1)
        parts.append(teacher.logits(x.contiguous(memory_format=torch.channels_last)).cpu())
    return torch.cat(parts).numpy() if parts else np.zeros((0, 0), np.float32)


def teacher_report(teacher: Teacher, faces: Faces, device: torch.device) -> ClassificationReport:
    return ClassificationReport.from_predictions(faces.y, teacher_logits(teacher, faces.x, device).argmax(1))
