"""Classification metrics shared by the worker's evaluation and the edge-side ONNX checks."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edgefer.labels import CLASSES, NUM_CLASSES


@dataclass(frozen=True)
class ClassificationReport:
    """Top-1 accuracy, per-class recall (FER2013 is imbalanced, so accuracy alone hides 'disgust') and confusion."""

    accuracy: float
    per_class_recall: dict[str, float]
    confusion: list[list[int]]
    count: int

    @classmethod
    def from_predictions(cls, y_true: np.ndarray, y_pred: np.ndarray) -> ClassificationReport:
        confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
        np.add.at(confusion, (y_true, y_pred), 1)
        support = confusion.sum(axis=1)
        recall = np.divide(np.diag(confusion), support, out=np.zeros(NUM_CLASSES), where=support > 0)
        return cls(
            accuracy=float(np.mean(y_true == y_pred)) if len(y_true) else 0.0,
            per_class_recall={name: round(float(r), 4) for name, r in zip(CLASSES, recall)},
            confusion=confusion.tolist(),
            count=int(len(y_true)),
        )

    @property
    def macro_recall(self) -> float:
        """Mean of the per-class recalls: what accuracy hides when a model gives up on a rare class."""
        return round(sum(self.per_class_recall.values()) / len(self.per_class_recall), 4)

    def to_dict(self) -> dict:
        return asdict(self)

    def format_table(self) -> str:
        """A plain-text report: accuracy, recall per class, and the confusion matrix (rows are true labels)."""
        width = max(len(c) for c in CLASSES)
        lines = [f"top-1 accuracy: {self.accuracy * 100:.2f}% on {self.count} faces", "", "per-class recall:"]
        lines += [f"  {name:<{width}}  {self.per_class_recall[name] * 100:6.2f}%" for name in CLASSES]
        lines += ["", "confusion (rows true, columns predicted):", " " * (width + 2) + "".join(f"{c[:5]:>7}" for c in CLASSES)]
        for name, row in zip(CLASSES, self.confusion):
            lines.append(f"  {name:<{width}}" + "".join(f"{v:>7}" for v in row))
        return "\n".join(lines)
