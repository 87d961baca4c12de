"""Evaluating a model file (ONNX via onnxruntime, or a PyTorch checkpoint) on a labelled face set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgefer.classification_report import ClassificationReport
from edgefer.datasets import Faces
from edgefer.labels import CLASSES
from edgefer.onnx_model import OnnxFaceClassifier


def predict_file(model_path: Path, faces: Faces, threads: int) -> np.ndarray:
    """Class predictions of an .onnx file (what ships) or an EAN checkpoint (.pt)."""
    if model_path.suffix == ".onnx":
        return OnnxFaceClassifier(model_path, intra_op_threads=threads).predict(faces.x)
    import torch

    from compression_worker.training.checkpoint import load_model
    from compression_worker.training.trainer import predict_logits

    torch.set_num_threads(threads)
    return predict_logits(load_model(model_path), faces.x, torch.device("cpu")).argmax(1)


def save_confusion_png(report: ClassificationReport, path: Path, title: str) -> None:
    """Row-normalised confusion matrix with counts, for the eye (rows: true class)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(report.confusion)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(CLASSES)), CLASSES, rotation=45, ha="right")
    ax.set_yticks(range(len(CLASSES)), CLASSES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(CLASSES)):
        for j in range(len(CLASSES)):
            colour = "white" if rates[i, j] > 0.5 else "black"
            ax.text(j, i, f"{rates[i, j]:.2f}\n{counts[i, j]}", ha="center", va="center", fontsize=7, color=colour)
    ax.set_title(f"{title}\ntop-1 {report.accuracy * 100:.2f}% on {report.count} faces")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluate_file(model_path: Path, faces: Faces, out_dir: Path | None, threads: int) -> ClassificationReport:
    report = ClassificationReport.from_predictions(faces.y, predict_file(model_path, faces, threads))
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(json.dumps({"model": str(model_path), "data": faces.source, **report.to_dict()}, indent=2))
        save_confusion_png(report, out_dir / "confusion.png", f"{model_path.name} on {Path(faces.source).name}")
    return report
