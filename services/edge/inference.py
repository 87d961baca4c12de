"""Running face batches on the current model from the node's event loop, directly or batched across requests.

onnxruntime runs on worker threads (it releases the GIL), so the event loop keeps reading frames
while a batch computes. Both take the holder's model once per onnxruntime call and return it (version, sha256)
with the results, so a swap can never make an answer name a model other than the one that computed it.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from edgefer.onnx_model import softmax
from services.edge.metrics import EdgeMetrics
from services.edge.model_holder import LoadedModel, ModelHolder


class NoModelError(RuntimeError):
    """Raised when a request arrives before any model has been loaded."""


def _infer(holder: ModelHolder, metrics: EdgeMetrics, faces: np.ndarray) -> tuple[np.ndarray, LoadedModel]:
    model = holder.current()
    if model is None:
        raise NoModelError("no model loaded yet")
    metrics.batch_faces.observe(len(faces))
    started = time.perf_counter()
    logits = model.classifier.logits(faces)
    metrics.record_model_time(model.version, time.perf_counter() - started, len(faces))
    return softmax(logits), model


class DirectInference:
    """One onnxruntime call per request, `workers` of them at a time: the lowest latency on an idle node."""

    def __init__(self, holder: ModelHolder, metrics: EdgeMetrics, workers: int = 2) -> None:
        self.holder = holder
        self.metrics = metrics
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="edgefer-infer")

    async def run(self, faces: np.ndarray) -> tuple[np.ndarray, LoadedModel]:
        return await asyncio.get_running_loop().run_in_executor(self._pool, _infer, self.holder, self.metrics, faces)

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class _Pending:
    faces: np.ndarray
    future: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class BatchedInference:
    """Faces of concurrent requests share one onnxruntime call (dynamic batching, as Triton does it).

    Up to `concurrency` batches compute at a time (two in flight keep 2 cores busier than one: +12%
    faces/s in the edge benchmark); whatever arrives while they run forms the next batch, so an idle
    node adds no delay and a busy one batches by itself. `max_wait_s` > 0 also holds a lone request
    that long for company; `max_batch` bounds the faces per call. Must be created on the event loop
    it serves.
    """

    def __init__(self, holder: ModelHolder, metrics: EdgeMetrics, max_batch: int = 64, max_wait_s: float = 0.0,
                 concurrency: int = 1) -> None:
        self.holder = holder
        self.metrics = metrics
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._slots = asyncio.Semaphore(concurrency)
        self._running: set[asyncio.Task] = set()
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="edgefer-batch")
        self._worker = asyncio.get_running_loop().create_task(self._loop())

    async def run(self, faces: np.ndarray) -> tuple[np.ndarray, LoadedModel]:
        item = _Pending(faces)
        self._queue.put_nowait(item)
        return await item.future

    async def close(self) -> None:
        self._worker.cancel()
        for task in self._running:
            task.cancel()
        await asyncio.gather(self._worker, *self._running, return_exceptions=True)
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _collect(self) -> list[_Pending]:
        """The oldest request plus what is queued (or arrives within max_wait_s), up to max_batch faces."""
        batch = [await self._queue.get()]
        size = len(batch[0].faces)
        deadline = asyncio.get_running_loop().time() + self.max_wait_s
        while size < self.max_batch:
            if self._queue.empty():
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            else:
                batch.append(self._queue.get_nowait())
            size += len(batch[-1].faces)
        return batch

    async def _loop(self) -> None:
        while True:
            await self._slots.acquire()
            batch = [p for p in await self._collect() if not p.future.done()]  # skip requests cancelled meanwhile
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[_Pending]) -> None:
        try:
            if batch:
                faces = np.concatenate([p.faces for p in batch])
                loop = asyncio.get_running_loop()
                probabilities, model = await loop.run_in_executor(self._pool, _infer, self.holder, self.metrics, faces)
                offset = 0
                for item in batch:
                    if not item.future.done():
                        item.future.set_result((probabilities[offset : offset + len(item.faces)], model))
                    offset += len(item.faces)
        except Exception as exc:  # handed to every waiting request; the batcher lives on
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
        finally:
            self._slots.release()
