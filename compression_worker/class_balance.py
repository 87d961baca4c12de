"""Post-hoc logit adjustment of an exported graph (Menon et al., "Long-tail learning via logit adjustment", 2021).

FER2013 has 16 happy faces for every disgusted one, and a model trained on it learns the prior: it rarely says
"disgust" or "fear", which top-1 accuracy hardly notices and the gate's per-class rule and macro recall do.
Subtracting tau * log(prior) from the logits moves each decision toward the rarer classes; tau = 1 is the
balanced-error optimum for a calibrated model, tau = 0 the model as trained. The adjustment is one constant Add at
the graph's output, so it applies to any exported graph (float or INT8) and the edge needs nothing new.

tau is chosen on the held-back faces: the one with the highest macro recall whose top-1 stays within `max_drop`
points of the unadjusted graph's (the test set never chooses).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgefer.classification_report import ClassificationReport
from edgefer.datasets import Faces
from edgefer.labels import CLASSES
from edgefer.onnx_model import OUTPUT_NAME, OnnxFaceClassifier

TAUS = tuple(round(0.05 * i, 2) for i in range(21))  # 0, 0.05, ..., 1


@dataclass(frozen=True)
class BalanceChoice:
    tau: float
    bias: list[float]  # added to the logits, per class (FER2013 order)
    prior: list[float]  # class shares of the training faces
    max_drop: float  # points of held-back top-1 the adjustment may cost
    held_back: list[dict]  # per tau tried: top-1 and macro recall on the held-back faces

    def to_dict(self) -> dict:
        return {"tau": self.tau, "bias": self.bias, "prior": self.prior, "max_drop_points": self.max_drop,
                "rule": "highest held-back macro recall within max_drop points of the unadjusted top-1",
                "held_back": self.held_back}


def class_prior(labels: np.ndarray) -> np.ndarray:
    counts = np.bincount(labels, minlength=len(CLASSES)).astype(np.float64)
    if (counts == 0).any():
        missing = [CLASSES[k] for k in np.flatnonzero(counts == 0)]
        raise ValueError(f"the training faces have no {', '.join(missing)}: no prior to adjust for")
    return counts / counts.sum()


def choose_tau(logits: np.ndarray, labels: np.ndarray, prior: np.ndarray, max_drop: float,
               taus: tuple[float, ...] = TAUS) -> BalanceChoice:
    """The tau of the rule above, from the graph's logits on the held-back faces."""
    rows = []
    for tau in taus:
        report = ClassificationReport.from_predictions(labels, (logits - tau * np.log(prior)).argmax(1))
        rows.append({"tau": tau, "top1": round(report.accuracy, 4), "macro_recall": report.macro_recall})
    floor = rows[0]["top1"] - max_drop / 100
    best = max((r for r in rows if r["top1"] >= floor), key=lambda r: (r["macro_recall"], -r["tau"]))
    bias = (-best["tau"] * np.log(prior)).astype(np.float32)
    return BalanceChoice(best["tau"], [round(float(b), 6) for b in bias], [round(float(p), 6) for p in prior],
                         max_drop, rows)


def add_output_bias(source: Path, output: Path, bias: np.ndarray) -> Path:
    """`source` with `bias` added to its logits: the old output renamed, one Add node writing the output."""
    model = onnx.load(str(source))
    graph = model.graph
    raw = f"{OUTPUT_NAME}_unadjusted"
    for node in graph.node:
        node.output[:] = [raw if name == OUTPUT_NAME else name for name in node.output]
        node.input[:] = [raw if name == OUTPUT_NAME else name for name in node.input]
    graph.initializer.append(numpy_helper.from_array(np.asarray(bias, np.float32).reshape(1, -1), "class_bias"))
    graph.node.append(helper.make_node("Add", [raw, "class_bias"], [OUTPUT_NAME], name="class_balance"))
    entry = model.metadata_props.add()
    entry.key, entry.value = "edgefer.class_bias", json.dumps([float(b) for b in bias])
    onnx.checker.check_model(model)
    output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(output))
    return output


def balance_graph(source: Path, output: Path, train: Faces, held_back: Faces, max_drop: float,
                  threads: int) -> BalanceChoice:
    """Choose tau on `held_back` and write the adjusted graph."""
    graph = OnnxFaceClassifier(source, intra_op_threads=threads)
    logits = np.concatenate([graph.logits(held_back.x[i : i + 512]) for i in range(0, len(held_back.x), 512)])
    choice = choose_tau(logits, held_back.y, class_prior(train.y), max_drop)
    add_output_bias(source, output, np.asarray(choice.bias, np.float32))
    return choice
