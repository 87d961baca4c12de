"""Validation accuracy of a checkpoint with test-time views averaged: none, mirror, mirror + 2-pixel shifts.

Used to decide what the exported graph averages (each view costs one more pass of multiply-adds).

    python benchmarks/tta_views.py runs/baseline/model.pt --data ../shared/data/fer2013/train.npz
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from compression_worker.training.checkpoint import load_model
from edgefer.datasets import load_faces, stratified_split


def shift(x: torch.Tensor, dx: int, dy: int, pad: int = 2) -> torch.Tensor:
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    return padded[:, :, pad + dy : pad + dy + x.shape[2], pad + dx : pad + dx + x.shape[3]]


VIEWS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "id": lambda t: t,
    "mirror": lambda t: t.flip(3),
    "right": lambda t: shift(t, 2, 0),
    "left": lambda t: shift(t, -2, 0),
    "right+mirror": lambda t: shift(t, 2, 0).flip(3),
    "left+mirror": lambda t: shift(t, -2, 0).flip(3),
}
SETS = [["id"], ["id", "mirror"], ["id", "mirror", "right", "left"], ["id", "mirror", "right", "left", "right+mirror", "left+mirror"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    full = load_faces(args.data)
    _, val_idx = stratified_split(full.y, args.val_fraction, args.seed)
    val = full.subset(val_idx)
    model = load_model(args.checkpoint)
    x = torch.from_numpy(val.x).float().unsqueeze(1)
    with torch.no_grad():
        probs = {name: torch.softmax(model(view(x)), 1).numpy() for name, view in VIEWS.items()}
    print("| views averaged | passes | val top-1 % |")
    print("|---|---:|---:|")
    for views in SETS:
        accuracy = np.mean(sum(probs[v] for v in views).argmax(1) == val.y) * 100
        print(f"| {' + '.join(views)} | {len(views)} | {accuracy:.2f} |")


if __name__ == "__main__":
    main()
