"""`edgefer-client`: stream frames to an edge node at a target rate; print results and end-to-end latency.

Frames go out as JPEG over StreamClassify. If the node restarts, the client reconnects with capped
exponential backoff and jitter and carries on with the next frame. With --output it writes the video
annotated with boxes and smoothed labels.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import grpc
import numpy as np
from prometheus_client import start_http_server

from edgefer.backoff import Backoff
from edgefer.labels import FACE_SIZE
from edgefer.v1 import edge_pb2, edge_pb2_grpc
from services.client.metrics import FRAME_STATUSES, ClientMetrics
from services.client.sources import SourceError, open_source


@dataclass
class StreamStats:
    sent: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    versions: set[str] = field(default_factory=set)
    reconnects: int = 0

    def record(self, result: edge_pb2.FrameResult, latency_ms: float) -> None:
        name = edge_pb2.FrameStatus.Name(result.status).removeprefix("FRAME_STATUS_").lower()
        self.statuses[name] = self.statuses.get(name, 0) + 1
        if result.status == edge_pb2.FRAME_STATUS_OK:
            self.latencies_ms.append(latency_ms)
            self.versions.add(result.model_version)

    @property
    def failed(self) -> int:
        """Frames answered with an error (a DROPPED frame is the node keeping up, not a failure)."""
        return sum(n for status, n in self.statuses.items() if status not in ("ok", "dropped"))

    def summary(self, seconds: float) -> str:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.statuses.items()))
        return (
            f"{self.sent} frames sent in {seconds:.1f}s ({counts}); reconnects {self.reconnects}; "
            f"latency p50 {np.percentile(lat, 50):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms; "
            f"model versions {sorted(self.versions)}"
        )


def annotate(frame: np.ndarray, result: edge_pb2.FrameResult) -> np.ndarray:
    for face in result.faces:
        b = face.box
        cv2.rectangle(frame, (b.x, b.y), (b.x + b.width, b.y + b.height), (0, 220, 0), 2)
        cv2.putText(frame, face.smoothed_label, (b.x, max(12, b.y - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 220, 0), 2)
    return frame


class DeviceClient:
    def __init__(self, target: str, fps: float, credentials: grpc.ChannelCredentials | None = None, quiet: bool = False,
                 metrics: ClientMetrics | None = None) -> None:
        self.target = target
        self.metrics = metrics
        self.period = 1.0 / fps if fps > 0 else 0.0
        self.credentials = credentials
        self.quiet = quiet
        self.stats = StreamStats()
        self._sent_at: dict[int, float] = {}
        self._frames: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        self._call: grpc.Future | None = None

    def request_stop(self) -> None:
        """Stop sending now and end the stream (Ctrl-C, SIGTERM): safe from a signal handler, whether the client
        is waiting for a result, sleeping between frames or waiting to reconnect."""
        self.stopping.set()
        call = self._call
        if call is not None:
            call.cancel()

    def _channel(self) -> grpc.Channel:
        if self.credentials is not None:
            return grpc.secure_channel(self.target, self.credentials)
        return grpc.insecure_channel(self.target)

    def _requests(self, frames: Iterator[np.ndarray], keep_frames: bool) -> Iterator[edge_pb2.Frame]:
        next_at = time.perf_counter()
        for frame in frames:
            if self.stopping.is_set():
                return
            next_at += self.period
            message = _frame_message(frame)
            if message is None:
                continue
            sequence = self.stats.sent
            self.stats.sent += 1
            with self._lock:
                self._sent_at[sequence] = time.perf_counter()
                if keep_frames:
                    self._frames[sequence] = frame
            message.sequence = sequence
            yield message
            self.stopping.wait(max(0.0, next_at - time.perf_counter()))

    def run(self, frames: Iterator[np.ndarray], writer: cv2.VideoWriter | None = None) -> StreamStats:
        """Stream until the source ends or a stop is requested; on UNAVAILABLE reconnect and continue with the
        next frames."""
        backoff = Backoff(0.2, 5.0)
        while not self.stopping.is_set():
            channel = self._channel()
            try:
                stub = edge_pb2_grpc.EdgeFerStub(channel)
                self._call = stub.StreamClassify(self._requests(frames, writer is not None))
                if self.stopping.is_set():  # asked to stop while the call was being made
                    self._call.cancel()
                for result in self._call:
                    self._on_result(result, writer)
                    backoff.reset()
                return self.stats
            except grpc.RpcError as exc:
                if self.stopping.is_set():
                    break
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                    raise
                self.stats.reconnects += 1
                if self.metrics:
                    self.metrics.reconnects.inc()
                delay = backoff.next_delay()
                print(f"node unavailable ({exc.details()}); reconnecting in {delay:.2f}s", file=sys.stderr)
                self.stopping.wait(delay)
            finally:
                self._call = None
                channel.close()
        return self.stats

    def _on_result(self, result: edge_pb2.FrameResult, writer: cv2.VideoWriter | None) -> None:
        with self._lock:
            sent = self._sent_at.pop(result.sequence, time.perf_counter())
            frame = self._frames.pop(result.sequence, None)
        latency_ms = (time.perf_counter() - sent) * 1e3
        self.stats.record(result, latency_ms)
        if self.metrics:
            status = edge_pb2.FrameStatus.Name(result.status).removeprefix("FRAME_STATUS_").lower()
            self.metrics.frames.labels(status if status in FRAME_STATUSES else "error").inc()
            if result.status == edge_pb2.FRAME_STATUS_OK:
                self.metrics.latency.observe(latency_ms / 1e3)
        if not self.quiet:
            labels = ", ".join(f"{f.label}/{f.smoothed_label}" for f in result.faces) or "-"
            status = edge_pb2.FrameStatus.Name(result.status).removeprefix("FRAME_STATUS_")
            print(f"frame {result.sequence:6d} {status:<7} {latency_ms:7.1f} ms  {result.model_version or '-':<12} {labels}")
        if writer is not None and frame is not None:
            writer.write(annotate(frame, result))


def _frame_message(frame: np.ndarray) -> edge_pb2.Frame | None:
    """A 48x48 frame is a face crop (sent raw, no detection); anything else goes as JPEG for the node to search."""
    if frame.shape[:2] == (FACE_SIZE, FACE_SIZE):
        gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        raw = edge_pb2.RawImage(width=FACE_SIZE, height=FACE_SIZE, format=edge_pb2.PIXEL_FORMAT_GRAY, pixels=gray.tobytes())
        return edge_pb2.Frame(raw=raw, is_face_crop=True)
    ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return edge_pb2.Frame(encoded=jpeg.tobytes()) if ok else None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgefer-client", description=__doc__)
    p.add_argument("--target", default="127.0.0.1:50051", help="edge node host:port")
    p.add_argument("--source", required=True,
                   help="video file, camera index (e.g. 0), a folder of images, faces.npz, or 'samples' (drawn faces)")
    p.add_argument("--fps", type=float, default=15.0, help="target frame rate (0: as fast as possible)")
    p.add_argument("--loop", action="store_true", help="repeat a video or folder")
    p.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0: source length)")
    p.add_argument("--output", type=Path, default=None, help="write the annotated video here (.mp4 or .avi)")
    p.add_argument("--tls-ca", type=Path, default=None, help="CA certificate to verify the node (enables TLS)")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.add_argument("--metrics-port", type=int, default=0,
                   help="serve Prometheus metrics (client-observed latency, results by status) on this port (0: off)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        frames = open_source(args.source, args.loop)
    except SourceError as exc:
        print(f"edgefer-client: error: {exc}", file=sys.stderr)
        return 2
    if args.max_frames:
        frames = (f for _, f in zip(range(args.max_frames), frames))
    first = next(frames, None)
    if first is None:
        print(f"edgefer-client: error: {args.source}: no frames", file=sys.stderr)
        return 2
    frames = _prepend(first, frames)
    writer = None
    if args.output:
        fourcc = cv2.VideoWriter_fourcc(*("mp4v" if args.output.suffix == ".mp4" else "MJPG"))
        writer = cv2.VideoWriter(str(args.output), fourcc, args.fps or 15.0, (first.shape[1], first.shape[0]))
    credentials = grpc.ssl_channel_credentials(args.tls_ca.read_bytes()) if args.tls_ca else None
    metrics = ClientMetrics()
    if args.metrics_port:
        start_http_server(args.metrics_port, registry=metrics.registry)
    client = DeviceClient(args.target, args.fps, credentials, args.quiet, metrics)
    # Ctrl-C and SIGTERM stop cleanly and print the summary, whether streaming, waiting or reconnecting
    previous = {signum: signal.signal(signum, lambda *_: client.request_stop()) for signum in (signal.SIGINT, signal.SIGTERM)}
    start = time.perf_counter()
    try:
        stats = client.run(frames, writer)
    except grpc.RpcError as exc:
        print(f"edgefer-client: error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if writer is not None:
            writer.release()
    print(stats.summary(time.perf_counter() - start))
    return 0


def _prepend(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


if __name__ == "__main__":
    sys.exit(main())
