"""Accuracy of exported models and of every ensemble of them (log-softmax averaged), on val and test_public.

Val is the stratified split the worker holds out of train.npz (seed 0, 10%): what an ensemble teacher would be
chosen on; test_public is reported, never used to choose.

    python benchmarks/ensemble_eval.py models/ean-baseline.onnx runs/export/its-m40.onnx models/ean-distilled.onnx
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from edgefer.datasets import load_faces, stratified_split
from edgefer.onnx_model import OnnxFaceClassifier

REPO = Path(__file__).resolve().parent.parent


def log_probs(model: Path, faces: np.ndarray) -> np.ndarray:
    classifier = OnnxFaceClassifier(model, intra_op_threads=2)
    logits = np.concatenate([classifier.logits(faces[i:i + 512]) for i in range(0, len(faces), 512)])
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+", help="exported .onnx models")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "fer2013")
    args = parser.parse_args()
    train, test = load_faces(args.data / "train.npz"), load_faces(args.data / "test_public.npz")
    _, val_idx = stratified_split(train.y, 0.1, 0)
    val = train.subset(val_idx)
    scores = {m: (log_probs(m, val.x), log_probs(m, test.x)) for m in args.models}
    print(f"{'ensemble':<70} {'val':>7} {'test':>7}")
    for size in range(1, len(args.models) + 1):
        for members in itertools.combinations(args.models, size):
            v = sum(scores[m][0] for m in members).argmax(axis=1)
            t = sum(scores[m][1] for m in members).argmax(axis=1)
            name = " + ".join(m.stem for m in members)
            print(f"{name:<70} {100 * (v == val.y).mean():>6.2f}% {100 * (t == test.y).mean():>6.2f}%")


if __name__ == "__main__":
    main()
