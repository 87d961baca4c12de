"""Model cards: the JSON that travels with every shipped ONNX file; its size, cost and accuracy go into the
registry manifest's metrics when the model is published."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from compression_worker.complexity import onnx_complexity
from compression_worker.provenance import git_commit
from edgefer.classification_report import ClassificationReport
from edgefer.datasets import data_sha256
from edgefer.labels import CLASSES, FACE_SIZE
from edgefer.timestamps import utc_now_iso


@dataclass
class ModelCard:
    name: str
    file: str
    file_sha256: str
    size_bytes: int
    params: int
    onnx_params: int
    macs_per_face: int
    mirror_average: bool
    architecture: dict
    input: dict
    classes: list[str]
    evaluation: dict[str, dict]
    training: dict
    export_commit: str
    created: str = field(default_factory=utc_now_iso)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")


def build_card(
    name: str,
    onnx_path: Path,
    params: int,
    architecture: dict,
    mirror_average: bool,
    evaluation: dict[str, tuple[ClassificationReport, str, str]],
    training: dict,
) -> ModelCard:
    """evaluation maps a set name (e.g. test_public) to (report, data path, data sha256)."""
    complexity = onnx_complexity(onnx_path)
    return ModelCard(
        name=name,
        file=onnx_path.name,
        file_sha256=data_sha256(onnx_path),
        size_bytes=onnx_path.stat().st_size,
        params=params,
        onnx_params=complexity.params,
        macs_per_face=complexity.macs,
        mirror_average=mirror_average,
        architecture=architecture,
        input={"name": "faces", "dtype": "float32", "shape": ["N", 1, FACE_SIZE, FACE_SIZE], "pixel_range": [0, 255]},
        classes=list(CLASSES),
        evaluation={
            key: {"data": data, "data_sha256": sha, **report.to_dict()} for key, (report, data, sha) in evaluation.items()
        },
        training=training,
        export_commit=git_commit(),
    )
