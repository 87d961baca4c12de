"""The edge node's gRPC server: Classify, StreamClassify (latest frame wins), GetModelInfo, health, reflection.

Structure follows the grpc examples: a servicer over the shared pieces (model holder, pipeline,
metrics), a `serve()` that wires health and reflection, and graceful shutdown that first reports
NOT_SERVING so that load balancers stop sending before in-flight calls are drained.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from edgefer.labels import CLASSES
from edgefer.v1 import edge_pb2, edge_pb2_grpc
from services.edge.detection import HaarFaceDetector
from services.edge.frames import FrameError
from services.edge.inference import BatchedInference, DirectInference
from services.edge.metrics import EdgeMetrics
from services.edge.model_holder import LoadedModel, ModelHolder
from services.edge.pipeline import FramePipeline
from services.edge.settings import EdgeSettings
from services.edge.tracking import FaceTracker

SERVICE_NAME = edge_pb2.DESCRIPTOR.services_by_name["EdgeFer"].full_name


class EdgeFerServicer(edge_pb2_grpc.EdgeFerServicer):
    def __init__(self, holder: ModelHolder, pipeline: FramePipeline, metrics: EdgeMetrics, drop_stale: bool) -> None:
        self.holder = holder
        self.pipeline = pipeline
        self.metrics = metrics
        self.drop_stale = drop_stale

    def _model_or_abort(self, context: grpc.ServicerContext) -> LoadedModel:
        model = self.holder.current()
        if model is None:
            self._abort(context, grpc.StatusCode.UNAVAILABLE, "no model loaded yet")
        return model

    def _abort(self, context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> None:
        self.metrics.errors.labels(code.name).inc()
        context.abort(code, message)

    def Classify(self, request: edge_pb2.ClassifyRequest, context: grpc.ServicerContext) -> edge_pb2.ClassifyResponse:
        model = self._model_or_abort(context)
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:  # the caller gave up already: do not spend the CPU
            self._abort(context, grpc.StatusCode.DEADLINE_EXCEEDED, "deadline expired before processing")
        try:
            result = self.pipeline.process(request.frame, model.version)
        except FrameError as exc:
            self.metrics.frames.labels("invalid").inc()
            code = grpc.StatusCode.RESOURCE_EXHAUSTED if exc.too_large else grpc.StatusCode.INVALID_ARGUMENT
            self._abort(context, code, str(exc))
        return edge_pb2.ClassifyResponse(result=result)

    def StreamClassify(self, request_iterator: Iterator[edge_pb2.Frame], context: grpc.ServicerContext) -> Iterator[edge_pb2.FrameResult]:
        self._model_or_abort(context)
        self.metrics.active_streams.inc()
        tracker = FaceTracker()
        try:
            frames = _LatestFrames(request_iterator) if self.drop_stale else None
            source = frames.batches() if frames else ([f] for f in request_iterator)
            for batch in source:
                if not context.is_active():  # cancelled or past its deadline: stop working for nobody
                    return
                *stale, frame = batch
                for old in stale:
                    self.metrics.dropped.inc()
                    self.metrics.frames.labels("dropped").inc()
                    yield edge_pb2.FrameResult(sequence=old.sequence, status=edge_pb2.FRAME_STATUS_DROPPED)
                yield self._stream_frame(frame, tracker, context)
        finally:
            self.metrics.active_streams.dec()

    def _stream_frame(self, frame: edge_pb2.Frame, tracker: FaceTracker, context: grpc.ServicerContext) -> edge_pb2.FrameResult:
        model = self._model_or_abort(context)
        try:
            result = self.pipeline.process(frame, model.version, tracker)
        except FrameError as exc:
            self.metrics.frames.labels("invalid").inc()
            self.metrics.errors.labels(grpc.StatusCode.INVALID_ARGUMENT.name).inc()
            return edge_pb2.FrameResult(
                sequence=frame.sequence, status=edge_pb2.FRAME_STATUS_INVALID, error=str(exc), model_version=model.version
            )
        return result

    def GetModelInfo(self, request: edge_pb2.GetModelInfoRequest, context: grpc.ServicerContext) -> edge_pb2.ModelInfo:
        model = self._model_or_abort(context)
        return edge_pb2.ModelInfo(version=model.version, sha256=model.sha256, classes=list(CLASSES), loaded_at=model.loaded_at)


class _LatestFrames:
    """Reads a stream's frames on a thread; the consumer gets all waiting frames, the newest last.

    When the node is slower than the client, the frames that piled up while one was processed are
    answered DROPPED and only the newest is classified: latency stays bounded instead of growing.
    """

    def __init__(self, requests: Iterator[edge_pb2.Frame]) -> None:
        self._pending: deque[edge_pb2.Frame] = deque()
        self._cond = threading.Condition()
        self._done = False
        self._error: BaseException | None = None
        threading.Thread(target=self._read, args=(requests,), daemon=True).start()

    def _read(self, requests: Iterator[edge_pb2.Frame]) -> None:
        try:
            for frame in requests:
                with self._cond:
                    self._pending.append(frame)
                    self._cond.notify()
        except BaseException as exc:  # the client went away or cancelled: end the stream
            self._error = exc
        finally:
            with self._cond:
                self._done = True
                self._cond.notify()

    def batches(self) -> Iterator[list[edge_pb2.Frame]]:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._done)
                if not self._pending:
                    return
                batch = list(self._pending)
                self._pending.clear()
            yield batch


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    holder: ModelHolder
    metrics: EdgeMetrics
    inference: DirectInference | BatchedInference

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

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
        self.server.stop(grace).wait()
        self.inference.close()


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
    metrics = metrics or EdgeMetrics()
    holder = ModelHolder()
    inference = (
        BatchedInference(holder, metrics, settings.batch_max_faces, settings.batch_max_wait_ms / 1e3)
        if settings.batch_across_streams
        else DirectInference(holder, metrics)
    )
    pipeline = FramePipeline(HaarFaceDetector(detect_width=settings.detect_width), inference, metrics)
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_concurrent_streams", settings.max_concurrent_streams),
    ]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=settings.max_concurrent_streams + 8), options=options)
    edge_pb2_grpc.add_EdgeFerServicer_to_server(EdgeFerServicer(holder, pipeline, metrics, settings.drop_stale_frames), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    address = f"{settings.host}:{settings.port}"
    credentials = _credentials(settings)
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    server.start()
    running = RunningServer(server, port, health_servicer, holder, metrics, inference)
    running.set_serving(False)
    return running
