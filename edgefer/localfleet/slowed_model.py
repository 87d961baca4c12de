"""A rollout candidate that answers exactly like a model but is slower: for the latency check of canary
analysis, in tests and benchmarks (needs the `onnx` package of the worker extra, not the edge runtime)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def slowed(model: onnx.ModelProto, matmuls: int = 48, width: int = 768) -> bytes:
    """The same answers after `matmuls` extra width x width products on the input (added times zero)."""
    copy = onnx.ModelProto.FromString(model.SerializeToString())
    graph = copy.graph
    output = graph.output[0].name
    for node in graph.node:
        node.output[:] = [f"{output}_raw" if o == output else o for o in node.output]
    rng = np.random.default_rng(0)
    graph.initializer.extend([
        numpy_helper.from_array(rng.random((1, width), dtype=np.float32), "slow_spread"),
        numpy_helper.from_array((rng.random((width, width), dtype=np.float32) / width), "slow_big"),
        numpy_helper.from_array(np.zeros((), np.float32), "slow_zero"),
    ])
    nodes = [helper.make_node("GlobalAveragePool", [graph.input[0].name], ["slow_pool"]),
             helper.make_node("Flatten", ["slow_pool"], ["slow_flat"]),
             helper.make_node("MatMul", ["slow_flat", "slow_spread"], ["slow_0"])]
    for i in range(matmuls):
        nodes.append(helper.make_node("MatMul", [f"slow_{i}", "slow_big"], [f"slow_{i + 1}"]))
    nodes += [helper.make_node("ReduceMean", [f"slow_{matmuls}"], ["slow_mean"], keepdims=1),
              helper.make_node("Mul", ["slow_mean", "slow_zero"], ["slow_nothing"]),
              helper.make_node("Add", [f"{output}_raw", "slow_nothing"], [output])]
    graph.node.extend(nodes)
    return copy.SerializeToString()
