"""The edge node under hostile load, as a real server process on loopback: bounded memory per request,
per stream and per connection, a node-wide stream cap, and metrics that exist before their first event."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgefer.localfleet.process_memory import memory_kib
from edgefer.v1 import edge_pb2, edge_pb2_grpc
from services.edge.metrics import EdgeMetrics
from services.edge.model_holder import load_onnx_file
from services.edge.server import start_server
from services.edge.settings import EdgeSettings
from services.edge.stream_frames import ConnectionBudget, latest_frames
from tests.conftest import free_port
from tests.hostile_images import jpeg_claiming, png_bomb

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "models" / "ean-pruned.onnx"
MiB = 1024 * 1024


@pytest.fixture
def node_process(tmp_path: Path):
    """An edge node process serving the shipped pruned model, without a registry."""
    port = free_port()
    log = open(tmp_path / "edge.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "services.edge.main", "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0",
         "--model-path", str(MODEL), "--intra-op-threads", "1"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = edge_pb2_grpc.EdgeFerStub(channel)
    deadline = time.monotonic() + 30
    while True:
        try:
            stub.GetModelInfo(edge_pb2.GetModelInfoRequest(), timeout=1)
            break
        except grpc.RpcError:
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "edge.log").read_text()
            time.sleep(0.2)
    yield process, port, stub, health_pb2_grpc.HealthStub(channel)
    channel.close()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


def test_decompression_bombs_are_refused_without_allocating_them(node_process) -> None:
    process, _, stub, _ = node_process
    bombs = [png_bomb(30000, 30000), jpeg_claiming(60000, 60000)] * 2
    assert all(len(b) < 1 * MiB for b in bombs)
    before = memory_kib(process.pid)["VmRSS"]

    def send(data: bytes) -> grpc.StatusCode:
        try:
            stub.Classify(edge_pb2.ClassifyRequest(frame=edge_pb2.Frame(encoded=data)), timeout=30)
        except grpc.RpcError as exc:
            assert "exceeds the limit" in exc.details()
            return exc.code()
        return grpc.StatusCode.OK

    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(send, bombs))
    assert codes == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 4  # never UNKNOWN, never decoded
    peak = memory_kib(process.pid)["VmHWM"]
    assert peak - before < 64 * 1024, f"peak RSS grew by {(peak - before) / 1024:.0f} MiB while refusing four bombs"
    assert process.poll() is None


def _frames(count: int, pixels: bytes) -> AsyncIterator[edge_pb2.Frame]:
    async def gen() -> AsyncIterator[edge_pb2.Frame]:
        raw = edge_pb2.RawImage(width=640, height=480, format=edge_pb2.PIXEL_FORMAT_BGR, pixels=pixels)
        for sequence in range(count):
            yield edge_pb2.Frame(sequence=sequence, raw=raw)
    return gen()


def test_fast_cameras_on_one_connection_keep_the_node_small_and_healthy(node_process) -> None:
    process, port, _, health_stub = node_process
    pixels = np.random.default_rng(0).integers(0, 255, size=640 * 480 * 3, dtype=np.uint8).tobytes()
    before = memory_kib(process.pid)["VmRSS"]
    health: list[int] = []
    stop = threading.Event()

    def probe() -> None:  # what the k3s liveness probe does, once a second at most
        while not stop.is_set():
            try:
                health.append(health_stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status)
            except grpc.RpcError:
                health.append(-1)
            time.sleep(0.25)

    async def cameras() -> list[list[int]]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 4 * MiB)]) as channel:
            stub = edge_pb2_grpc.EdgeFerStub(channel)

            async def camera() -> list[int]:
                return [r.status async for r in stub.StreamClassify(_frames(60, pixels))]

            return await asyncio.gather(*(camera() for _ in range(32)))

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        streams = asyncio.run(cameras())
    finally:
        stop.set()
        prober.join()
    assert all(len(statuses) == 60 for statuses in streams)  # every frame answered, in order
    dropped = sum(s.count(edge_pb2.FRAME_STATUS_DROPPED) for s in streams)
    assert dropped > 0
    peak = memory_kib(process.pid)["VmHWM"]
    # Before the newest-frame-only reader and the connection budget: 1.7 to 2.4 GiB here; now about 120 MiB.
    assert peak - before < 256 * 1024, f"peak RSS grew by {(peak - before) / 1024:.0f} MiB under 32 fast 640x480 streams"
    assert health and all(status == health_pb2.HealthCheckResponse.SERVING for status in health), health


def test_the_stream_cap_refuses_with_resource_exhausted() -> None:
    running = start_server(EdgeSettings(host="127.0.0.1", port=0, metrics_port=0, intra_op_threads=1, max_streams=2))
    running.swap(load_onnx_file(MODEL, threads=1, version="v1"))

    async def scenario() -> grpc.StatusCode:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = edge_pb2_grpc.EdgeFerStub(channel)
            crop = edge_pb2.Frame(raw=edge_pb2.RawImage(width=48, height=48, format=edge_pb2.PIXEL_FORMAT_GRAY,
                                                        pixels=bytes(48 * 48)), is_face_crop=True)
            open_calls = [stub.StreamClassify() for _ in range(2)]
            for call in open_calls:
                await call.write(crop)
                await call.read()  # established and counted
            third = stub.StreamClassify()
            try:  # the node refuses as the call starts, before any frame: read without writing
                await third.read()
                code = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                assert "serves 2 streams already" in exc.details()
            for call in open_calls:
                await call.done_writing()
            return code

    try:
        assert asyncio.run(scenario()) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert running.metrics.registry.get_sample_value("edgefer_errors_total", {"code": "RESOURCE_EXHAUSTED"}) == 1
    finally:
        running.stop(0)


def test_a_stream_holds_only_its_newest_frame_and_the_budget_empties() -> None:
    budget = ConnectionBudget(limit=5000)

    async def scenario() -> list[tuple[list[int], int | None]]:
        queue: asyncio.Queue[edge_pb2.Frame | None] = asyncio.Queue()

        async def requests() -> AsyncIterator[edge_pb2.Frame]:
            while (frame := await queue.get()) is not None:
                yield frame

        seen = []
        for sequence in range(10):
            queue.put_nowait(edge_pb2.Frame(sequence=sequence, encoded=bytes(1000)))
        queue.put_nowait(edge_pb2.Frame(sequence=10, encoded=bytes(9000)))  # over the budget: dropped on arrival
        queue.put_nowait(edge_pb2.Frame(sequence=11, encoded=bytes(1000)))
        queue.put_nowait(None)
        async for item in latest_frames(requests(), budget, "peer-1"):
            await asyncio.sleep(0.01)  # slower than the sender
            seen.append((item.dropped, item.frame.sequence if item.frame else None))
        return seen

    seen = asyncio.run(scenario())
    assert seen == [(list(range(10)) + [10], 11)]
    assert budget.held == {}


def test_every_labelled_series_exists_at_zero_on_a_fresh_node() -> None:
    metrics = EdgeMetrics()
    sample = metrics.registry.get_sample_value
    assert sample("edgefer_errors_total", {"code": "UNAVAILABLE"}) == 0
    assert sample("edgefer_errors_total", {"code": "RESOURCE_EXHAUSTED"}) == 0
    assert sample("edgefer_frames_total", {"status": "dropped"}) == 0
    assert sample("edgefer_model_sync_failures_total", {"reason": "signature"}) == 0


def test_cancelled_streams_leave_nothing_held() -> None:
    running = start_server(EdgeSettings(host="127.0.0.1", port=0, metrics_port=0, intra_op_threads=1))
    running.swap(load_onnx_file(MODEL, threads=1, version="v1"))
    pixels = bytes(640 * 480 * 3)

    async def scenario() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}", options=[("grpc.max_send_message_length", 4 * MiB)]) as channel:
            stub = edge_pb2_grpc.EdgeFerStub(channel)

            async def cancelled_camera() -> None:
                call = stub.StreamClassify(_frames(1000, pixels))
                async for _ in call:
                    call.cancel()  # mid-stream, with frames still arriving
                    return

            await asyncio.gather(*(cancelled_camera() for _ in range(40)), return_exceptions=True)

    try:
        asyncio.run(scenario())
        servicer_budget = running.servicer.budget
        deadline = time.monotonic() + 10
        while (servicer_budget.held or running.metrics.active_streams._value.get()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert servicer_budget.held == {} and running.metrics.active_streams._value.get() == 0
        assert running.servicer.streams == 0
    finally:
        running.stop(0)


def test_a_connection_that_never_handshakes_is_closed() -> None:
    import socket

    running = start_server(EdgeSettings(host="127.0.0.1", port=0, metrics_port=0, intra_op_threads=1,
                                        handshake_timeout_seconds=1.0))
    try:
        with socket.create_connection(("127.0.0.1", running.port)) as raw:
            raw.settimeout(15)
            started = time.monotonic()
            while raw.recv(1024):  # the server's HTTP/2 settings, then the close
                pass
            assert time.monotonic() - started < 5
    finally:
        running.stop(0)
