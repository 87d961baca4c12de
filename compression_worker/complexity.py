"""Multiply-adds and parameters counted on the exported ONNX graph itself, per face.

Counting the file that ships (rather than the PyTorch module) includes whatever the export added,
such as the mirror-averaging pass, and excludes what it folded away (BatchNorm into the convolutions).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference


@dataclass(frozen=True)
class GraphComplexity:
    macs: int
    params: int
    conv_layers: int

    @property
    def mmacs(self) -> float:
        return self.macs / 1e6


def _dims(value_info: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value for d in value_info.type.tensor_type.shape.dim]


def onnx_complexity(path: str | Path) -> GraphComplexity:
    """MACs of Conv, Gemm and MatMul nodes for a batch of one face (shape-inferred with batch fixed to 1)."""
    model = onnx.load(str(path))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    shapes = {vi.name: _dims(vi) for vi in [*inferred.graph.value_info, *inferred.graph.output]}
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    # An INT8 (QDQ) graph feeds Conv from DequantizeLinear(int8 weight, scale, zero point), a graph with fp16-stored
    # weights from Cast(fp16 weight) (compression_worker/onnx_fp16.py): look through both.
    dequantized = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type in ("DequantizeLinear", "Cast")}
    quant_params = {name for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") for name in n.input[1:]}
    weights = {**weights, **{out: weights[src] for out, src in dequantized.items() if src in weights}}
    macs = 0
    conv_layers = 0
    for node in inferred.graph.node:
        if node.op_type == "Conv":
            w = weights[node.input[1]]
            out = shapes[node.output[0]]
            if 0 in out:
                raise ValueError(f"{path}: could not infer the output shape of {node.name}")
            macs += int(np.prod(out)) * int(np.prod(w.shape[1:]))
            conv_layers += 1
        elif node.op_type in ("Gemm", "MatMul"):
            w = weights.get(node.input[1])
            rows = shapes.get(node.input[0], [1])[0] or 1
            if w is not None:
                macs += rows * int(w.size)
    params = sum(
        int(t.size)
        for name, t in ((i.name, numpy_helper.to_array(i)) for i in model.graph.initializer)
        if t.ndim >= 1 and t.size > 1 and name not in quant_params
    )
    return GraphComplexity(macs=macs, params=params, conv_layers=conv_layers)
