"""The one place an edge node keeps its model: loads, self-checks and swaps onnxruntime sessions atomically.

A request takes `holder.current()` once and uses that model to the end, so a swap never mixes two
models inside one answer, and every result can name the version that produced it.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgefer.labels import FACE_SIZE, NUM_CLASSES
from edgefer.onnx_model import ModelFileError, OnnxFaceClassifier
from edgefer.registry.version import VersionLabel
from edgefer.timestamps import utc_now_iso


class ModelLoadError(RuntimeError):
    """A model file that must not be served; the message says why."""


@dataclass(frozen=True)
class LoadedModel:
    version: VersionLabel
    sha256: str
    classifier: OnnxFaceClassifier
    loaded_at: str
    data: bytes = field(repr=False)  # the ONNX bytes: what a node's other serving processes load
    epoch: str = ""  # the registry epoch of its manifest ("" for a bootstrap file): number + epoch name the bytes
    class_bias: tuple[float, ...] = ()  # the logit adjustment baked into the graph (`edgefer balance`); () when none


def class_bias_of(metadata: dict[str, str]) -> tuple[float, ...]:
    """The graph's `edgefer.class_bias` metadata, read once at load; a node refuses a graph whose value is broken."""
    raw = metadata.get("edgefer.class_bias")
    if raw is None:
        return ()
    try:
        bias = tuple(float(b) for b in json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise ModelLoadError(f"unreadable edgefer.class_bias metadata {raw!r} ({exc})") from exc
    if len(bias) != NUM_CLASSES:
        raise ModelLoadError(f"edgefer.class_bias has {len(bias)} values for {NUM_CLASSES} classes")
    return bias


def load_onnx_model(data: bytes, version: VersionLabel, threads: int) -> LoadedModel:
    """Build a session from ONNX bytes and prove it works (shape, finiteness) before anyone can use it."""
    try:
        classifier = OnnxFaceClassifier(data, intra_op_threads=threads, spin=False)  # the node's cores are shared
    except ModelFileError as exc:
        raise ModelLoadError(f"model {version}: {exc}") from exc
    inputs = classifier.session.get_inputs()
    if len(inputs) != 1 or list(inputs[0].shape[1:]) != [1, FACE_SIZE, FACE_SIZE]:
        raise ModelLoadError(f"model {version}: input must be (N, 1, {FACE_SIZE}, {FACE_SIZE}), got {inputs[0].shape}")
    probe = np.stack([np.zeros((FACE_SIZE, FACE_SIZE), np.uint8), np.full((FACE_SIZE, FACE_SIZE), 255, np.uint8)])
    try:
        logits = classifier.logits(probe)
    except Exception as exc:
        raise ModelLoadError(f"model {version}: self-check inference failed ({exc})") from exc
    if logits.shape != (2, NUM_CLASSES) or not np.isfinite(logits).all():
        raise ModelLoadError(f"model {version}: self-check gave logits of shape {logits.shape} or non-finite values")
    try:
        class_bias = class_bias_of(classifier.metadata)
    except ModelLoadError as exc:
        raise ModelLoadError(f"model {version}: {exc}") from exc
    return LoadedModel(
        version=version,
        sha256=hashlib.sha256(data).hexdigest(),
        classifier=classifier,
        loaded_at=utc_now_iso(),
        data=data,
        class_bias=class_bias,
    )


def load_onnx_file(path: Path, threads: int, version: VersionLabel | None = None) -> LoadedModel:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read model file ({exc.strerror})") from exc
    return load_onnx_model(data, version or path.stem, threads)


class ModelHolder:
    """The serving model and the one before it (for instant rollback)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: LoadedModel | None = None
        self._previous: LoadedModel | None = None

    def current(self) -> LoadedModel | None:
        return self._current  # a single reference read: atomic under the GIL and free-threaded builds alike

    def previous(self) -> LoadedModel | None:
        return self._previous

    def swap(self, model: LoadedModel) -> LoadedModel | None:
        """Serve `model` from the next request on; returns the model it replaced."""
        with self._lock:
            replaced, self._current = self._current, model
            if replaced is not None:
                self._previous = replaced
            return replaced

    def rollback(self) -> LoadedModel:
        """Serve the previous model again (and keep the current one as the new previous)."""
        with self._lock:
            if self._previous is None:
                raise ModelLoadError("no previous model to roll back to")
            self._current, self._previous = self._previous, self._current
            return self._current
