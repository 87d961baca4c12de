"""ONNX export of an EAN, with the checks that make the file safe to ship.

The graph's contract: input `faces` float32 (N, 1, 48, 48) raw 0..255, output `logits` (N, 7) in FER2013
order, dynamic batch, opset >= 17. Normalisation (and optional mirror averaging) live inside the graph,
and the contract is written into the file's metadata so a runtime can check it without a side file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from compression_worker.model.ean import EAN
from edgefer.labels import CLASSES, FACE_SIZE
from edgefer.onnx_model import INPUT_NAME, OUTPUT_NAME, OnnxFaceClassifier

OPSET = 18
# The exporter warns about every torchvision op it cannot register; EAN uses none of them.
logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
PARITY_TOLERANCE = 1e-4


class MirrorAveraged(nn.Module):
    """Averages the logits of a face and its mirror image: test-time augmentation baked into the graph."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One pass over [faces; mirrored faces] keeps a single copy of the weights in the graph.
        n = x.shape[0]
        both = self.model(torch.cat([x, torch.flip(x, dims=[3])], dim=0))
        return (both[:n] + both[n:]) * 0.5


def exportable(model: EAN, mirror_average: bool) -> nn.Module:
    model = model.cpu().eval().to(memory_format=torch.contiguous_format)
    return MirrorAveraged(model).eval() if mirror_average else model


def export_onnx(model: EAN, path: Path, mirror_average: bool = True, metadata: dict[str, str] | None = None) -> Path:
    """Write `path` (a single self-contained file) and validate it with the ONNX checker."""
    module = exportable(model, mirror_average)
    example = torch.full((2, 1, FACE_SIZE, FACE_SIZE), 128.0)
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(
        module,
        (example,),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        opset_version=OPSET,
        dynamo=True,
        dynamic_shapes={"x": {0: batch}},
        external_data=False,
        verbose=False,
    )
    proto = program.model_proto
    info = {
        "edgefer.classes": json.dumps(list(CLASSES)),
        "edgefer.input": json.dumps({"name": INPUT_NAME, "shape": ["N", 1, FACE_SIZE, FACE_SIZE], "range": [0, 255]}),
        "edgefer.architecture": json.dumps(model.config.to_dict()),
        "edgefer.mirror_average": json.dumps(mirror_average),
        **(metadata or {}),
    }
    for key, value in info.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(path))
    return path


@torch.no_grad()
def parity_error(model: EAN, onnx_path: Path, faces: np.ndarray, mirror_average: bool = True) -> float:
    """Largest absolute logit difference between PyTorch and onnxruntime on the same uint8 faces."""
    module = exportable(model, mirror_average)
    expected = module(torch.from_numpy(faces).float().unsqueeze(1)).numpy()
    actual = OnnxFaceClassifier(onnx_path, intra_op_threads=1).logits(faces)
    return float(np.max(np.abs(expected - actual)))
