"""Soft labels from a teacher: eval mode, un-augmented faces, optional mirror averaging, cached per round.

The cache file records the sha256 of the faces it was computed on and the settings, and is ignored
when any of them differ, so a stale file can never leak into a student's training.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from compression_worker.distill.teachers import Teacher, teacher_logits


@dataclass(frozen=True)
class SoftLabelSpec:
    temperature: float
    mirror_average: bool
    teacher_sha256: str = ""  # set where the teacher is not implied by the work directory (prune --teacher)

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def faces_sha256(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


def teacher_soft_labels(teacher: Teacher, x: np.ndarray, spec: SoftLabelSpec, device: torch.device) -> np.ndarray:
    """Class probabilities at temperature T for every face (rows sum to 1); the teacher was built with
    the spec's mirror averaging (`TorchTeacher(..., mirror_average=spec.mirror_average)`)."""
    logits = teacher_logits(teacher, x, device)
    return torch.softmax(torch.from_numpy(logits) / spec.temperature, dim=1).numpy().astype(np.float32)


def load_cached(path: Path, x: np.ndarray, spec: SoftLabelSpec) -> np.ndarray | None:
    """The cached soft labels when they were made for exactly these faces and settings, else None."""
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as cached:
        if str(cached["data_sha256"]) != faces_sha256(x) or str(cached["spec"]) != spec.key():
            return None
        probs = cached["probs"]
    return probs if probs.shape == (len(x), probs.shape[1]) else None


def save_cached(path: Path, probs: np.ndarray, x: np.ndarray, spec: SoftLabelSpec) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, probs=probs, data_sha256=faces_sha256(x), spec=spec.key())
    tmp.replace(path)


def refine(previous: np.ndarray | None, new: np.ndarray, mode: str, round_index: int) -> np.ndarray:
    """Combine this round's soft labels with the refined labels of the rounds before.

    latest:  the new teacher alone.
    average: running mean over all teachers so far (each round weighs equally), which damps the
             drift of any single teacher's mistakes.
    """
    if mode == "latest" or previous is None:
        return new
    if mode == "average":
        weight = 1.0 / round_index
        return ((1.0 - weight) * previous + weight * new).astype(np.float32)
    raise ValueError(f"unknown soft-label refinement {mode!r}; use latest or average")


def cached_soft_labels(path: Path, teacher: Teacher, x: np.ndarray, spec: SoftLabelSpec, device: torch.device) -> np.ndarray:
    """The soft labels cached at `path` for these faces and settings, computed and cached when there are none."""
    soft = load_cached(path, x, spec)
    if soft is None:
        soft = teacher_soft_labels(teacher, x, spec, device)
        save_cached(path, soft, x, spec)
    return soft
