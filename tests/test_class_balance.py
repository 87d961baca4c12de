"""Logit adjustment of an exported graph: the rule that picks tau, the Add at the output, the CLI and its card."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from compression_worker.class_balance import add_output_bias, choose_tau, class_prior
from compression_worker.cli import main as worker_main
from compression_worker.export import export_onnx
from compression_worker.model.ean import EAN, EANConfig
from edgefer.classification_report import ClassificationReport
from edgefer.onnx_model import OnnxFaceClassifier
from tests.conftest import synthetic_faces

PRIOR = np.array([0.14, 0.02, 0.14, 0.25, 0.17, 0.11, 0.17])


def skewed_logits(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from PRIOR and logits of a model that learnt the prior: rare classes lose close calls."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(7, size=n, p=PRIOR)
    logits = rng.normal(0, 1, (n, 7)) + np.log(PRIOR)
    logits[np.arange(n), labels] += 1.5
    return logits, labels


def test_tau_is_the_most_balanced_within_the_allowed_top1_drop() -> None:
    logits, labels = skewed_logits()
    plain = ClassificationReport.from_predictions(labels, logits.argmax(1))
    plain_top1, plain_macro = plain.accuracy, plain.macro_recall
    choice = choose_tau(logits, labels, PRIOR, max_drop=1.0)
    chosen = next(r for r in choice.held_back if r["tau"] == choice.tau)
    assert chosen["top1"] >= plain_top1 - 0.01
    assert chosen["macro_recall"] > plain_macro  # the rare classes are found more often
    allowed = [r for r in choice.held_back if r["top1"] >= plain_top1 - 0.01]
    assert chosen["macro_recall"] == max(r["macro_recall"] for r in allowed)
    np.testing.assert_allclose(choice.bias, -choice.tau * np.log(PRIOR), atol=1e-5)
    assert choose_tau(logits, labels, PRIOR, max_drop=0.0).held_back[0]["tau"] == 0.0


def test_a_class_missing_from_the_training_faces_is_named() -> None:
    with pytest.raises(ValueError, match="disgust"):
        class_prior(np.array([0, 2, 3, 4, 5, 6]))


def test_the_adjusted_graph_adds_the_bias_to_the_logits(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = export_onnx(EAN(EANConfig(stem_channels=8, widths=(16,), depths=(1,), dropout=0.0)).eval(),
                         tmp_path / "ean.onnx")
    bias = np.array([0.1, 2.0, 0.3, -0.5, 0.0, 0.2, -0.1], np.float32)
    adjusted = add_output_bias(source, tmp_path / "balanced.onnx", bias)
    faces, _ = synthetic_faces(16)
    before, after = OnnxFaceClassifier(source), OnnxFaceClassifier(adjusted)
    np.testing.assert_allclose(after.logits(faces), before.logits(faces) + bias, atol=1e-5)
    assert json.loads(after.metadata["edgefer.class_bias"]) == pytest.approx(bias.tolist())


def test_the_balance_cli_writes_the_graph_and_a_card_that_says_what_it_chose(tmp_path: Path, toy_npz: Path) -> None:
    torch.manual_seed(0)
    model = tmp_path / "ean.onnx"
    export_onnx(EAN(EANConfig(stem_channels=8, widths=(16,), depths=(1,), dropout=0.0)).eval(), model)
    out = tmp_path / "balanced.onnx"
    assert worker_main(["balance", "--model", str(model), "--output", str(out), "--data", str(toy_npz),
                        "--test-data", str(toy_npz), "--max-drop", "1", "--threads", "1"]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    balance = card["training"]["class_balance"]
    assert 0.0 <= balance["tau"] <= 1.0 and len(balance["bias"]) == 7 and len(balance["held_back"]) == 21
    assert card["file_sha256"] and "toy" in card["evaluation"]
    assert (tmp_path / "balanced-confusion.png").exists()
