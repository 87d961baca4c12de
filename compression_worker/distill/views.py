"""Distillation from stored views: each training face augmented K times once, the teacher's logits stored with
each view, and the student trained on those views (Shen & Xing, "A fast knowledge distillation framework", 2021).

Consistent distillation runs the teacher on every batch of every epoch of every student; on a CPU a dense
teacher's forward pass costs more than the student's whole step. Here the teacher runs K times over the faces
when the views are made, and never again: every epoch after that costs the student alone, and students of other
seeds or recipes reuse the same views. Every target still fits its input exactly (the teacher saw the very
pixels the student sees), the difference from consistent mode is that the views repeat every K epochs and are
not mixed.

The views live in a folder (one file per view, so a build that is cut short resumes at the next view) whose
`spec.json` names the faces, the augmentation, the seed and the teacher; a folder made for anything else is
refused, never silently reused.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from compression_worker.data.augment import augment_faces
from compression_worker.distill.loss import weighted
from compression_worker.distill.soft_labels import faces_sha256
from compression_worker.distill.teachers import Teacher
from compression_worker.training.trainer import Batch, Criterion, batch_cross_entropy
from edgefer.jobs.recipe import AugmentConfig, MixConfig


@dataclass(frozen=True)
class ViewSpec:
    views: int
    augment: dict  # AugmentConfig as a dict
    seed: int
    teacher: str  # what identifies the teacher (the sha256 of its files)
    faces_sha256: str


class ViewCacheError(ValueError):
    """A views folder made for other faces, augmentation or teacher."""


@dataclass
class StoredViews:
    images: torch.Tensor  # uint8 (K, N, 48, 48): view k of face i
    logits: torch.Tensor  # float32 (K, N, classes): the teacher on exactly that view

    @property
    def count(self) -> int:
        return self.images.shape[0]


def make_views(folder: Path, teacher: Teacher, faces: np.ndarray, spec: ViewSpec, augment: AugmentConfig,
               device: torch.device, batch_size: int = 512) -> StoredViews:
    """The stored views in `folder`, making the missing ones (a build cut short goes on at its next view)."""
    folder.mkdir(parents=True, exist_ok=True)
    spec_path = folder / "spec.json"
    wanted = json.dumps(asdict(spec), sort_keys=True)
    if spec_path.exists() and spec_path.read_text() != wanted:
        stored, given = json.loads(spec_path.read_text()), json.loads(wanted)
        differ = sorted(k for k in given if stored.get(k) != given[k])
        raise ViewCacheError(f"{folder}: views made for another {', '.join(differ)}; use another folder")
    if not spec_path.exists():
        spec_path.write_text(wanted)
    images, logits = [], []
    for k in range(spec.views):
        path = folder / f"view{k}.npz"
        if not path.exists():
            image, logit = _one_view(teacher, faces, augment, spec.seed * 1_000 + k, device, batch_size, k, spec.views)
            tmp = path.with_name(f"view{k}.tmp.npz")
            np.savez(tmp, images=image, logits=logit)
            tmp.replace(path)
        with np.load(path) as stored:
            images.append(torch.from_numpy(stored["images"]))
            logits.append(torch.from_numpy(stored["logits"]))
    return StoredViews(torch.stack(images).to(device), torch.stack(logits).to(device))


def _one_view(teacher: Teacher, faces: np.ndarray, augment: AugmentConfig, seed: int, device: torch.device,
              batch_size: int, k: int, total: int) -> tuple[np.ndarray, np.ndarray]:
    """Every face augmented once (seeded) and rounded to pixels, and the teacher's logits on those pixels."""
    generator = torch.Generator(device=device).manual_seed(seed)
    images, logits = [], []
    steps = range(0, len(faces), batch_size)
    for i in tqdm(steps, desc=f"view {k + 1}/{total}", leave=False, mininterval=5, disable=not sys.stderr.isatty()):
        x = torch.from_numpy(faces[i : i + batch_size]).to(device).float().unsqueeze(1)
        view = augment_faces(x, augment, generator).round_().clamp_(0, 255)
        logits.append(teacher.logits(view.contiguous(memory_format=torch.channels_last)).float().cpu())
        images.append(view.squeeze(1).to(torch.uint8).cpu())
    print(f"view {k + 1}/{total} made", flush=True)
    return torch.cat(images).numpy(), torch.cat(logits).numpy()


def view_spec(views: int, augment: AugmentConfig, seed: int, teacher_key: str, faces: np.ndarray) -> ViewSpec:
    return ViewSpec(views, asdict(augment), seed, teacher_key, faces_sha256(faces))


def teacher_views(folder: Path, teacher: Teacher, teacher_files: list[Path], views: int, augment: AugmentConfig,
                  faces: np.ndarray, device: torch.device) -> StoredViews:
    """The views of `faces` labelled by the teacher made of `teacher_files`, made once in `folder`. Seed 0 always:
    students of every seed, and the pruning of a student of the same teacher, share them."""
    spec = view_spec(views, augment, 0, teacher_key(teacher_files), faces)
    print(f"{views} stored views per face from {teacher.name} in {folder}", flush=True)
    return make_views(folder, teacher, faces, spec, augment, device)


def refuse_mixing(mix: MixConfig) -> None:
    """Stored views are trained on as they are: mixing two would pair pixels with no stored teacher output."""
    if mix.mixup_alpha > 0 or mix.cutmix_alpha > 0:
        raise ValueError("distill mode views trains on the stored views as they are: turn mixup and CutMix off")


def teacher_key(paths: list[Path]) -> str:
    """The sha256 of the teacher's files, in order (what a views folder is made for)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


class ViewInputs:
    """The Trainer's inputs from stored views: face i in epoch e is its view (e + offset_i) mod K, so each face
    goes through all its views in K epochs, and the faces of one batch are at different views."""

    def __init__(self, views: StoredViews, seed: int) -> None:
        self.views = views
        generator = torch.Generator().manual_seed(seed)
        n = views.images.shape[1]
        self.offset = torch.randint(0, views.count, (n,), generator=generator).to(views.images.device)

    def __call__(self, x_all: torch.Tensor, y_all: torch.Tensor, idx: torch.Tensor, epoch: int,
                 generator: torch.Generator) -> Batch:
        view = (self.offset[idx] + epoch) % self.views.count
        x = self.views.images[view, idx].float().unsqueeze(1)
        return Batch(x.contiguous(memory_format=torch.channels_last), y_all[idx], idx, view=view)


def view_kd_criterion(views: StoredViews, alpha: float, temperature: float, label_smoothing: float = 0.0) -> Criterion:
    """The teacher's stored probabilities at temperature T on each face's view in the batch."""

    def loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        soft = torch.softmax(views.logits[batch.view, batch.indices] / temperature, dim=1)
        return weighted(batch_cross_entropy(logits, batch, label_smoothing), logits, soft, alpha, temperature)

    return loss
