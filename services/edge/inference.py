"""Running face batches on the current model, directly or micro-batched across concurrent requests.

Both take the holder's model once per onnxruntime call and return its version with the results, so
a swap can never make an answer name a model other than the one that computed it.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from edgefer.onnx_model import softmax
from services.edge.metrics import EdgeMetrics
from services.edge.model_holder import LoadedModel, ModelHolder


class NoModelError(RuntimeError):
    """Raised when a request arrives before any model has been loaded."""


def _current(holder: ModelHolder) -> LoadedModel:
    model = holder.current()
    if model is None:
        raise NoModelError("no model loaded yet")
    return model


class DirectInference:
    """One onnxruntime call per request: the lowest latency when the node is not saturated."""

    def __init__(self, holder: ModelHolder, metrics: EdgeMetrics) -> None:
        self.holder = holder
        self.metrics = metrics

    def run(self, faces: np.ndarray) -> tuple[np.ndarray, str]:
        model = _current(self.holder)
        self.metrics.batch_faces.observe(len(faces))
        return softmax(model.classifier.logits(faces)), model.version

    def close(self) -> None:
        """Nothing to release."""


@dataclass
class _Pending:
    faces: np.ndarray
    done: threading.Event = field(default_factory=threading.Event)
    probabilities: np.ndarray | None = None
    version: str = ""
    error: BaseException | None = None


class BatchedInference:
    """Faces of concurrent requests share one onnxruntime call; a request waits at most `max_wait_s` for company."""

    def __init__(self, holder: ModelHolder, metrics: EdgeMetrics, max_batch: int = 64, max_wait_s: float = 0.002) -> None:
        self.holder = holder
        self.metrics = metrics
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="edgefer-batcher", daemon=True)
        self._thread.start()

    def run(self, faces: np.ndarray) -> tuple[np.ndarray, str]:
        item = _Pending(faces)
        self._queue.put(item)
        item.done.wait()
        if item.error is not None:
            raise item.error
        return item.probabilities, item.version

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _collect(self, first: _Pending) -> list[_Pending]:
        """The first request plus whatever arrives before its deadline, up to max_batch faces."""
        batch, size = [first], len(first.faces)
        deadline = time.monotonic() + self.max_wait_s
        while size < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:  # closing: finish this batch, let the loop see the sentinel
                self._queue.put(None)
                break
            batch.append(item)
            size += len(item.faces)
        return batch

    def _loop(self) -> None:
        while (first := self._queue.get()) is not None:
            batch = self._collect(first)
            try:
                model = _current(self.holder)
                faces = np.concatenate([p.faces for p in batch])
                self.metrics.batch_faces.observe(len(faces))
                probabilities = softmax(model.classifier.logits(faces))
                offset = 0
                for item in batch:
                    item.probabilities = probabilities[offset : offset + len(item.faces)]
                    item.version = model.version
                    offset += len(item.faces)
            except BaseException as exc:  # handed to every waiting request; the batcher lives on
                for item in batch:
                    item.error = exc
            for item in batch:
                item.done.set()
