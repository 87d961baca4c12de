"""Accuracy of exported models and of every ensemble of them (log-softmax averaged), on val and test_public.

Val is the stratified split the worker holds out of train.npz (seed 0, 10%): what an ensemble teacher would be
chosen on; test_public is reported, never used to choose. `--views` adds test-time views (each graph already
averages a face with its mirror): 2-pixel shifts, zooms of +-8%, rotations of +-8 degrees, for teachers, which
never ship and can afford them.

    python benchmarks/ensemble_eval.py models/ean-baseline.onnx runs/export/its-m40.onnx models/ean-distilled.onnx
    python benchmarks/ensemble_eval.py models/teachers/vgg13-fer.onnx models/ean-baseline.onnx --views all
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import cv2
import numpy as np

from edgefer.datasets import load_faces, stratified_split
from edgefer.onnx_model import OnnxFaceClassifier

REPO = Path(__file__).resolve().parent.parent


def warp(faces: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return np.stack([cv2.warpAffine(f, matrix, (48, 48), borderMode=cv2.BORDER_REFLECT_101) for f in faces])


def shifted(dx: float, dy: float) -> np.ndarray:
    return np.float32([[1, 0, dx], [0, 1, dy]])


CENTRE = (23.5, 23.5)
SHIFTS = [shifted(2, 0), shifted(-2, 0), shifted(0, 2), shifted(0, -2)]
ZOOMS = [cv2.getRotationMatrix2D(CENTRE, 0, s) for s in (1.08, 0.92)]
ROTATIONS = [cv2.getRotationMatrix2D(CENTRE, a, 1.0) for a in (8, -8)]
VIEW_SETS = {"none": [], "shift": SHIFTS, "shift-zoom": SHIFTS + ZOOMS, "all": SHIFTS + ZOOMS + ROTATIONS}


def log_probs(model: Path, faces: np.ndarray, views: list[np.ndarray]) -> np.ndarray:
    """Log-softmax of the model on the faces, summed over the faces themselves and each extra view of them."""
    classifier = OnnxFaceClassifier(model, intra_op_threads=2)
    total = np.zeros((len(faces), 7), np.float64)
    pixels = faces.astype(np.float32)
    for batch in itertools.chain([pixels], (warp(pixels, m) for m in views)):  # one view in memory at a time
        logits = np.concatenate([classifier.logits(batch[i:i + 512]) for i in range(0, len(batch), 512)])
        centred = logits - logits.max(axis=1, keepdims=True)
        total += centred - np.log(np.exp(centred).sum(axis=1, keepdims=True))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+", help="exported .onnx models")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "fer2013")
    parser.add_argument("--views", choices=sorted(VIEW_SETS), default="none",
                        help="test-time views besides the face (and its mirror, inside each graph)")
    args = parser.parse_args()
    train, test = load_faces(args.data / "train.npz"), load_faces(args.data / "test_public.npz")
    _, val_idx = stratified_split(train.y, 0.1, 0)
    val = train.subset(val_idx)
    views = VIEW_SETS[args.views]
    scores = {m: (log_probs(m, val.x, views), log_probs(m, test.x, views)) for m in args.models}
    print(f"{'ensemble':<70} {'val':>7} {'test':>7}")
    for size in range(1, len(args.models) + 1):
        for members in itertools.combinations(args.models, size):
            v = sum(scores[m][0] for m in members).argmax(axis=1)
            t = sum(scores[m][1] for m in members).argmax(axis=1)
            name = " + ".join(m.stem for m in members)
            print(f"{name:<70} {100 * (v == val.y).mean():>6.2f}% {100 * (t == test.y).mean():>6.2f}%")


if __name__ == "__main__":
    main()
