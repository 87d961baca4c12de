"""`edgefer-classify`: classify cropped 48x48 faces from a file with an ONNX model, as an edge node would.

Runs on onnxruntime alone; prints a sample of predictions, the accuracy when the data is labelled,
and the measured throughput (`make classify`). No gRPC, no fleet: the quickest look at what a model does.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from edgefer.classification_report import ClassificationReport
from edgefer.datasets import DatasetError, load_faces
from edgefer.labels import CLASSES
from edgefer.onnx_model import OnnxFaceClassifier, softmax


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgefer-classify", description=__doc__)
    p.add_argument("--model", type=Path, required=True, help="an EAN .onnx file")
    p.add_argument("--data", type=Path, required=True, help="npz, fer2013.csv or a folder per class")
    p.add_argument("--usage", default=None, help="with a fer2013.csv: which Usage rows (e.g. PublicTest)")
    p.add_argument("--show", type=int, default=10, help="how many individual predictions to print")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    return p


def run(args: argparse.Namespace) -> None:
    classifier = OnnxFaceClassifier(args.model, intra_op_threads=args.threads)
    faces = load_faces(args.data, args.usage)
    picks = np.random.default_rng(0).choice(len(faces), size=min(args.show, len(faces)), replace=False)
    probs = softmax(classifier.logits(faces.x[picks]))
    print(f"model {args.model} on {len(faces)} faces from {args.data}\n")
    print(f"{'face':>6}  {'true':<9} {'predicted':<9} {'confidence':>10}")
    for i, p in zip(picks, probs):
        mark = "" if p.argmax() == faces.y[i] else "  x"
        print(f"{i:>6}  {CLASSES[faces.y[i]]:<9} {CLASSES[p.argmax()]:<9} {p.max() * 100:9.1f}%{mark}")
    start = time.perf_counter()
    predictions = classifier.predict(faces.x, batch_size=64)
    seconds = time.perf_counter() - start
    report = ClassificationReport.from_predictions(faces.y, predictions)
    print(f"\n{report.format_table()}\n")
    print(f"throughput: {len(faces) / seconds:,.0f} faces/s (batch 64, {args.threads} thread(s))")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (DatasetError, ValueError) as exc:
        print(f"edgefer-classify: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
