"""The edge node's gRPC server: Classify, StreamClassify (latest frame wins), GetModelInfo, health, reflection.

The server is grpc.aio on an event loop of its own thread: one loop reads and answers every stream,
and the CPU work (decoding, detection, onnxruntime) runs on worker threads that release the GIL, so
a node is not bounded by a thread per stream. `RunningServer` is the thread-safe handle the rest of
the node (main, the registry sync agent, tests) uses to swap models, report health and stop.
Structure follows the grpc examples: a servicer over the shared pieces (model holder, pipeline,
metrics), health and reflection wired in, and graceful shutdown that first reports NOT_SERVING so
that load balancers stop sending before in-flight calls are drained.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from edgefer.labels import CLASSES
from edgefer.v1 import edge_pb2, edge_pb2_grpc
from services.edge.detection import HaarFaceDetector, StreamDetector
from services.edge.frame_pipeline import FramePipeline
from services.edge.frames import FrameError
from services.edge.inference import BatchedInference, DirectInference
from services.edge.metrics import EdgeMetrics
from services.edge.model_holder import LoadedModel, ModelHolder
from services.edge.settings import EdgeSettings
from services.edge.stream_frames import ConnectionBudget, latest_frames, one_by_one
from services.edge.tracking import FaceTracker

SERVICE_NAME = edge_pb2.DESCRIPTOR.services_by_name["EdgeFer"].full_name
T = TypeVar("T")


class EdgeFerServicer(edge_pb2_grpc.EdgeFerServicer):
    def __init__(self, holder: ModelHolder, pipeline: FramePipeline, metrics: EdgeMetrics, settings: EdgeSettings) -> None:
        self.holder = holder
        self.pipeline = pipeline
        self.metrics = metrics
        self.drop_stale = settings.drop_stale_frames
        self.max_streams = settings.max_streams
        self.budget = ConnectionBudget(settings.max_connection_frame_bytes)
        self.streams = 0  # open StreamClassify calls of this process (the event loop's thread alone touches it)

    async def _model_or_abort(self, context: grpc.aio.ServicerContext) -> LoadedModel:
        model = self.holder.current()
        if model is None:
            await self._abort(context, grpc.StatusCode.UNAVAILABLE, "no model loaded yet")
        return model

    async def _abort(self, context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str) -> None:
        self.metrics.errors.labels(code.name).inc()
        await context.abort(code, message)

    async def Classify(self, request: edge_pb2.ClassifyRequest, context: grpc.aio.ServicerContext) -> edge_pb2.ClassifyResponse:
        model = await self._model_or_abort(context)
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:  # the caller gave up already: do not spend the CPU
            await self._abort(context, grpc.StatusCode.DEADLINE_EXCEEDED, "deadline expired before processing")
        try:
            result = await self.pipeline.process(request.frame, model)
        except FrameError as exc:
            self.metrics.frames.labels("invalid").inc()
            code = grpc.StatusCode.RESOURCE_EXHAUSTED if exc.too_large else grpc.StatusCode.INVALID_ARGUMENT
            await self._abort(context, code, str(exc))
        return edge_pb2.ClassifyResponse(result=result)

    async def StreamClassify(
        self, request_iterator: AsyncIterator[edge_pb2.Frame], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[edge_pb2.FrameResult]:
        await self._model_or_abort(context)
        if self.streams >= self.max_streams:
            await self._abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"the node serves {self.max_streams} streams already; retry later or on another node")
        self.streams += 1
        self.metrics.active_streams.inc()
        tracker, detector = FaceTracker(), self.pipeline.stream_detector()
        try:
            source = latest_frames(request_iterator, self.budget, context.peer()) if self.drop_stale else one_by_one(request_iterator)
            async with aclosing(source):  # a cancelled stream releases its reader and its frames now, not at GC
                async for item in source:
                    if context.done():  # cancelled or past its deadline: stop working for nobody
                        return
                    for sequence in item.dropped:
                        self.metrics.dropped.inc()
                        self.metrics.frames.labels("dropped").inc()
                        yield edge_pb2.FrameResult(sequence=sequence, status=edge_pb2.FRAME_STATUS_DROPPED)
                    if item.frame is not None:
                        yield await self._stream_frame(item.frame, tracker, detector, context)
        finally:
            self.streams -= 1
            self.metrics.active_streams.dec()

    async def _stream_frame(self, frame: edge_pb2.Frame, tracker: FaceTracker, detector: StreamDetector,
                            context: grpc.aio.ServicerContext) -> edge_pb2.FrameResult:
        model = await self._model_or_abort(context)
        try:
            return await self.pipeline.process(frame, model, tracker, detector)
        except FrameError as exc:
            self.metrics.frames.labels("invalid").inc()
            self.metrics.errors.labels(grpc.StatusCode.INVALID_ARGUMENT.name).inc()
            return edge_pb2.FrameResult(
                sequence=frame.sequence, status=edge_pb2.FRAME_STATUS_INVALID, error=str(exc), model_version=model.version,
                model_sha256=model.sha256,
            )

    async def GetModelInfo(self, request: edge_pb2.GetModelInfoRequest, context: grpc.aio.ServicerContext) -> edge_pb2.ModelInfo:
        model = await self._model_or_abort(context)
        return edge_pb2.ModelInfo(version=model.version, sha256=model.sha256, classes=list(CLASSES),
                                  loaded_at=model.loaded_at, epoch=model.epoch, class_bias=model.class_bias)


class _LoopThread:
    """An asyncio loop on a daemon thread, and a way to run coroutines on it from any other thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="edgefer-grpc", daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


class ServingNode(Protocol):
    """What the rest of a node (main, the registry sync agent) needs of its server, one process or several."""

    port: int
    holder: ModelHolder
    metrics: EdgeMetrics

    def swap(self, model: LoadedModel) -> None: ...

    def rollback(self) -> LoadedModel: ...

    def set_serving(self, serving: bool) -> None: ...

    def stop(self, grace: float) -> None: ...


@dataclass
class RunningServer:
    """Thread-safe handle on a node's server; its methods may be called from any thread but the loop's."""

    port: int
    health: health.aio.HealthServicer
    holder: ModelHolder
    metrics: EdgeMetrics
    servicer: EdgeFerServicer
    _server: grpc.aio.Server
    _inference: DirectInference | BatchedInference
    _cpu_pool: ThreadPoolExecutor
    _loop: _LoopThread
    serving: bool = False  # the health status this process reports; with the holder's models, the node's whole state

    def set_serving(self, serving: bool) -> None:
        self._loop.call(_set_health(self.health, serving))
        self.serving = serving

    def swap(self, model: LoadedModel) -> None:
        self.holder.swap(model)
        self._now_serving(model)
        self.set_serving(True)

    def rollback(self) -> LoadedModel:
        """Serve the previous model again, at once (it is still loaded)."""
        model = self.holder.rollback()
        self._now_serving(model)
        return model

    def _now_serving(self, model: LoadedModel) -> None:
        self.metrics.swaps.inc()
        self.metrics.model.info({"version": model.version, "sha256": model.sha256})

    def stop(self, grace: float) -> None:
        self.set_serving(False)
        self._loop.call(self._server.stop(grace))
        self._loop.call(self._inference.close())
        self._cpu_pool.shutdown(wait=False, cancel_futures=True)
        self._loop.close()


async def _set_health(servicer: health.aio.HealthServicer, serving: bool) -> None:
    """The overall status and the EdgeFer service's, which always agree on a node."""
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ("", SERVICE_NAME):
        await servicer.set(name, status)


def _credentials(settings: EdgeSettings) -> grpc.ServerCredentials | None:
    if settings.tls_cert is None:
        return None
    if settings.tls_key is None:
        raise ValueError("setting tls_key is required with tls_cert")
    pair = [(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())]
    if settings.tls_client_ca is None:
        return grpc.ssl_server_credentials(pair)
    return grpc.ssl_server_credentials(pair, root_certificates=settings.tls_client_ca.read_bytes(), require_client_auth=True)


def start_server(settings: EdgeSettings, metrics: EdgeMetrics | None = None) -> RunningServer:
    """Start serving (NOT_SERVING until a model is swapped in); returns the handle with the bound port."""
    loop = _LoopThread()
    try:
        return loop.call(_start(settings, metrics or EdgeMetrics(), loop))
    except BaseException:
        loop.close()
        raise


async def _start(settings: EdgeSettings, metrics: EdgeMetrics, loop: _LoopThread) -> RunningServer:
    holder = ModelHolder()
    inference = (
        BatchedInference(holder, metrics, settings.batch_max_faces, settings.batch_max_wait_ms / 1e3, settings.batch_concurrency)
        if settings.batch_across_streams
        else DirectInference(holder, metrics, workers=settings.process_cores)
    )
    cpu_pool = ThreadPoolExecutor(settings.process_cores, thread_name_prefix="edgefer-detect")
    detector = HaarFaceDetector(detect_width=settings.detect_width)
    pipeline = FramePipeline(detector, inference, metrics, cpu_pool, settings.redetect_every)
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_concurrent_streams", settings.max_concurrent_streams),
        # HTTP/2 receive windows at 64 KiB beyond a message in progress, not grown by bandwidth probing: a
        # node reads frames only as fast as it uses them, so senders wait in flow control, not in its memory
        # (300 streams cancelled mid-stream: peak 0.9 to 2.3 GiB with probing, 0.7 GiB without).
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", 64 * 1024),
        ("grpc.so_reuseport", int(settings.workers > 1)),  # a node's serving processes share its port, nobody else
        ("grpc.server_handshake_timeout_ms", int(settings.handshake_timeout_seconds * 1000)),  # idle raw TCP: closed
    ]
    server = grpc.aio.server(options=options)
    servicer = EdgeFerServicer(holder, pipeline, metrics, settings)
    edge_pb2_grpc.add_EdgeFerServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    address = f"{settings.host}:{settings.port}"
    credentials = _credentials(settings)
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    await server.start()
    await _set_health(health_servicer, serving=False)
    return RunningServer(port, health_servicer, holder, metrics, servicer, server, inference, cpu_pool, loop)
