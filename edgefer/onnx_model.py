"""Running an exported EAN with onnxruntime: the one inference path of the edge (no torch needed).

The graph takes raw 0..255 float pixels (N, 1, 48, 48) and normalises inside, so callers only crop and resize.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgefer.labels import FACE_SIZE

INPUT_NAME = "faces"
OUTPUT_NAME = "logits"


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


class ModelFileError(ValueError):
    """A model that onnxruntime cannot load; the message names the file and says why."""


class OnnxFaceClassifier:
    """An onnxruntime session over an EAN graph with an explicit thread budget (edge nodes have few cores)."""

    def __init__(self, model: str | Path | bytes, intra_op_threads: int = 1, spin: bool = True) -> None:
        """`spin=False` keeps idle intra-op threads from busy-waiting: right where the same cores also
        serve gRPC and run face detection (an edge node), wrong for a benchmark of the model alone."""
        name = "model bytes" if isinstance(model, bytes) else str(model)
        if not isinstance(model, bytes) and not Path(model).exists():
            raise ModelFileError(f"{name}: no such model file")
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        source = model if isinstance(model, bytes) else str(model)
        try:
            self.session = ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for a bad file
            raise ModelFileError(f"{name}: onnxruntime cannot load it ({exc})") from exc
        meta = self.session.get_modelmeta()
        self.metadata: dict[str, str] = dict(meta.custom_metadata_map)

    def input_spec(self) -> dict:
        """The graph's declared input as the registry records it: name, dtype, shape with "N" for a free dim."""
        (declared,) = self.session.get_inputs()[:1]
        dtypes = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(float16)": "float16"}
        shape = [dim if isinstance(dim, int) else "N" for dim in declared.shape]
        return {"name": declared.name, "dtype": dtypes.get(declared.type, declared.type), "shape": shape}

    def logits(self, faces: np.ndarray) -> np.ndarray:
        """faces: uint8 or float (N, 48, 48) or (N, 1, 48, 48) raw pixels -> float32 logits (N, 7)."""
        batch = np.asarray(faces, dtype=np.float32)
        if batch.ndim == 3:
            batch = batch[:, None]
        if batch.ndim != 4 or batch.shape[1:] != (1, FACE_SIZE, FACE_SIZE):
            raise ValueError(f"faces must be (N, 48, 48) or (N, 1, 48, 48), got {batch.shape}")
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]

    def probabilities(self, faces: np.ndarray) -> np.ndarray:
        return softmax(self.logits(faces))

    def predict(self, faces: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class indices for many faces, in bounded batches."""
        parts = [self.logits(faces[i : i + batch_size]).argmax(axis=1) for i in range(0, len(faces), batch_size)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
