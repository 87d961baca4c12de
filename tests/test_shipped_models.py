"""The committed models/ artifacts: budgets, card consistency, and the card's accuracy reproduced."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from compression_worker.complexity import onnx_complexity
from edgefer.classification_report import ClassificationReport
from edgefer.onnx_model import OnnxFaceClassifier

MODELS = Path(__file__).resolve().parent.parent / "models"
SHIPPED = sorted(MODELS.glob("*.onnx"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_model_is_within_budget_and_matches_its_card(path: Path) -> None:
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["file_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert path.stat().st_size < 2_000_000
    assert card["params"] <= 200_000
    assert onnx_complexity(path).macs == card["macs_per_face"] <= 25_000_000
    training = card["training"].get("source_training", card["training"])  # an INT8 card nests its float model's
    assert training["git_commit"] and training["command"].startswith(("edgefer-worker train", "edgefer-worker distill",
                                                                      "edgefer-worker prune"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_card_accuracy_is_reproduced_by_onnxruntime(path: Path, real_fer: Path) -> None:
    card = json.loads(path.with_suffix(".json").read_text())
    data = np.load(real_fer / "test_public.npz")
    predictions = OnnxFaceClassifier(path, intra_op_threads=2).predict(data["x"])
    report = ClassificationReport.from_predictions(data["y"], predictions)
    assert report.accuracy == pytest.approx(card["evaluation"]["test_public"]["accuracy"], abs=1e-9)


def test_a_baseline_is_shipped() -> None:
    assert (MODELS / "ean-baseline.onnx").exists()
