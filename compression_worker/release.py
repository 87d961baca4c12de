"""From a checkpoint to files that ship: ONNX export with a parity check, INT8, model cards, confusion PNGs.

Shared by the `export`/`quantize` CLIs and the worker service, so a model published by a job carries
exactly the card a hand-made one does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from compression_worker.class_balance import BalanceChoice, balance_graph
from compression_worker.evaluation import evaluate_file, save_confusion_png
from compression_worker.export import PARITY_TOLERANCE, export_onnx, parity_error
from compression_worker.model.ean import count_parameters
from compression_worker.model_card import ModelCard, build_card
from compression_worker.onnx_fp16 import MIN_AGREEMENT, prediction_agreement, store_weights_fp16
from compression_worker.quantize import MIN_INT8_AGREEMENT, calibration_faces, quantize_int8
from compression_worker.training.checkpoint import load_network
from compression_worker.training.run import DataSplits
from edgefer.classification_report import ClassificationReport
from edgefer.datasets import Faces, data_sha256, load_faces
from edgefer.onnx_model import OnnxFaceClassifier

WEIGHT_STORAGE = ("fp32", "fp16", "int8")


def export_checkpoint(
    checkpoint: Path,
    output: Path,
    eval_data: Path,
    mirror: bool = True,
    parity_faces: int = 512,
    *,
    threads: int,
    weights: str = "fp32",
    calibration: np.ndarray | None = None,
) -> tuple[ModelCard, ClassificationReport]:
    """Export, prove parity on real faces (the file is removed when it fails), evaluate, write the card. With
    `weights` fp16 or int8 (teachers that ship in the repository; int8 calibrated on `calibration` faces) the
    weights are then stored that way, and the graph must predict what the fp32 one did on the parity faces."""
    if weights not in WEIGHT_STORAGE:
        raise ValueError(f"unknown weight storage {weights!r}; use one of {', '.join(WEIGHT_STORAGE)}")
    if weights == "int8" and (calibration is None or not len(calibration)):
        raise ValueError("int8 weights need calibration faces")
    model = load_network(checkpoint)  # an EAN, or a dense teacher (same graph contract)
    summary_path = checkpoint.parent / "summary.json"
    training = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    training.pop("test", None)
    export_onnx(model, output, mirror_average=mirror)
    faces = load_faces(eval_data)
    error = parity_error(model, output, faces.x[:parity_faces], mirror_average=mirror)
    print(f"parity: max |onnxruntime - pytorch| = {error:.2e} on {min(len(faces), parity_faces)} real faces")
    if error > PARITY_TOLERANCE:
        output.unlink()
        raise ValueError(f"{output}: parity error {error:.2e} exceeds {PARITY_TOLERANCE:.0e}; file removed")
    if weights != "fp32":
        training["weights"] = _store_weights(output, weights, faces.x[:parity_faces], calibration, threads)
    report = evaluate_file(output, faces, None, threads)
    _confusion(report, output, eval_data)
    card = build_card(
        name=output.stem,
        onnx_path=output,
        params=count_parameters(model),
        architecture=model.config.to_dict(),
        mirror_average=mirror,
        evaluation={eval_data.stem: (report, str(eval_data), data_sha256(eval_data))},
        training=training,
    )
    card.write(output.with_suffix(".json"))
    return card, report


def _store_weights(output: Path, weights: str, faces: np.ndarray, calibration: np.ndarray, threads: int) -> dict:
    """Store the verified fp32 graph's weights as fp16 or INT8 in its place; the file is removed when it no longer
    predicts what the fp32 graph did on `faces` (INT8: a dense teacher keeps its accuracy at a quarter of the bytes
    and runs 3-4x faster on a CPU with VNNI)."""
    full = output.with_name(output.stem + ".fp32.onnx")
    output.replace(full)
    if weights == "fp16":
        store_weights_fp16(full, output)
        minimum = MIN_AGREEMENT
    else:
        quantize_int8(full, output, calibration)
        minimum = MIN_INT8_AGREEMENT
    agreement = prediction_agreement(full, output, faces, threads)
    full.unlink()
    print(f"{weights} weights: {agreement:.2%} of {len(faces)} faces predicted as in fp32")
    if agreement < minimum:
        output.unlink()
        raise ValueError(f"{output}: {weights} weights change {1 - agreement:.2%} of predictions; file removed")
    calibrated = {"calibration_faces": len(calibration)} if weights == "int8" else {}
    return {"storage": weights, "agreement_with_fp32": round(agreement, 4), "agreement_faces": len(faces), **calibrated}


def quantize_model(
    model_path: Path, output: Path, train: Faces, calibration_count: int, eval_data: Path, threads: int
) -> tuple[ModelCard, ClassificationReport, float]:
    """INT8 of an exported model, its card (with the float model's accuracy beside it) and confusion PNG."""
    OnnxFaceClassifier(model_path)  # names a missing or broken file before any work
    quantize_int8(model_path, output, calibration_faces(train.x, train.y, calibration_count))
    card, report, float_accuracy = _derived_card(model_path, output, eval_data, threads, {
        "quantized_from": str(model_path),
        "calibration_faces": calibration_count,
        "calibration_data": train.source,
        "scheme": "onnxruntime static QDQ, per-channel int8 weights, uint8 activations",
    })
    return card, report, float_accuracy


def balance_model(
    model_path: Path, output: Path, splits: DataSplits, eval_data: Path, max_drop: float, threads: int
) -> tuple[ModelCard, ClassificationReport, BalanceChoice]:
    """The logit-adjusted graph of an exported model (tau chosen on the held-back faces), its card and PNG."""
    choice = balance_graph(model_path, output, splits.train, splits.val, max_drop, threads)
    card, report, _ = _derived_card(model_path, output, eval_data, threads, {
        "balanced_from": str(model_path),
        "class_balance": choice.to_dict(),
        "train_data": splits.train.source,
    })
    return card, report, choice


def _derived_card(source_path: Path, output: Path, eval_data: Path, threads: int,
                  training: dict) -> tuple[ModelCard, ClassificationReport, float]:
    """The card of a graph made from an exported one (its architecture and size from the source's card), with the
    source's accuracy on the same faces beside its own, and its confusion PNG."""
    faces = load_faces(eval_data)
    report = evaluate_file(output, faces, None, threads)
    source_accuracy = evaluate_file(source_path, faces, None, threads).accuracy
    _confusion(report, output, eval_data)
    source_card = source_path.with_suffix(".json")
    source = json.loads(source_card.read_text()) if source_card.exists() else {}
    card = build_card(
        name=output.stem,
        onnx_path=output,
        params=source.get("params", 0),
        architecture=source.get("architecture", {}),
        mirror_average=source.get("mirror_average", True),
        evaluation={eval_data.stem: (report, str(eval_data), data_sha256(eval_data))},
        training={**training, "source_accuracy": source_accuracy, "source_training": source.get("training", {})},
    )
    card.write(output.with_suffix(".json"))
    return card, report, source_accuracy


def _confusion(report: ClassificationReport, output: Path, eval_data: Path) -> None:
    stem = output.with_suffix("")
    save_confusion_png(report, stem.parent / f"{stem.name}-confusion.png", f"{output.name} on {eval_data.name}")
