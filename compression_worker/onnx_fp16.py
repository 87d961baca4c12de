"""Exported graphs with their float weights stored as fp16 and computed in fp32: half the file, the same answers.

Teachers never ship to the edge but do ship in the repository (models/teachers/) and in the worker image, where a
dense network's fp32 weights cost tens of MB. Each large float initializer is stored in fp16 and cast back to fp32
by a Cast node in front of the graph (onnxruntime folds it when the session is built), so every runtime runs the
graph as before; the only change is fp16 rounding of the weights, checked by prediction agreement on real faces.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgefer.onnx_model import OnnxFaceClassifier

MIN_AGREEMENT = 0.995  # share of faces on which the fp16-weight graph predicts what the fp32 one does


def store_weights_fp16(source: Path, output: Path, min_elements: int = 1024) -> int:
    """Write `source` with every float initializer of at least `min_elements` values stored as fp16 into
    `output` (may be `source`); returns how many were converted."""
    model = onnx.load(str(source))
    graph = model.graph
    kept, casts = [], []
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT and int(np.prod(init.dims)) >= min_elements:
            half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), f"{init.name}__fp16")
            casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                          name=f"{init.name}__to_fp32"))
            kept.append(half)
        else:
            kept.append(init)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(output))
    return len(casts)


def prediction_agreement(a: Path, b: Path, faces: np.ndarray, threads: int) -> float:
    """Share of faces (uint8, N x 48 x 48) on which two graphs predict the same class."""
    first = OnnxFaceClassifier(a, intra_op_threads=threads).logits(faces).argmax(1)
    second = OnnxFaceClassifier(b, intra_op_threads=threads).logits(faces).argmax(1)
    return float(np.mean(first == second))
