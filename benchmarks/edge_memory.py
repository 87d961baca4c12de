"""The edge node's memory under hostile loads: RSS before, peak and after, each load on a fresh node process.

    python benchmarks/edge_memory.py                         # this checkout
    python benchmarks/edge_memory.py --node-src /tmp/old     # another checkout's node (e.g. before a change)

Loads (issue #16): four decompression bombs at once (two PNGs of 30000x30000, two JPEG headers claiming
60000x60000); 64 cameras on one connection sending 640x480 BGR frames as fast as they can, with a health
probe every 0.25 s (1 s deadline, as the k3s liveness probe); 300 streams over 10 connections cancelled
after their third answer (RSS read 5 s later); 400 streams over 50 connections held open at once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgefer.localfleet.edge_nodes import served_version
from edgefer.localfleet.ports import free_port
from edgefer.localfleet.process_memory import memory_kib
from edgefer.v1 import edge_pb2, edge_pb2_grpc
from tests.hostile_images import jpeg_claiming, png_bomb

REPO = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
PIXELS = np.random.default_rng(0).integers(0, 255, size=640 * 480 * 3, dtype=np.uint8).tobytes()


def start_node(src: Path, model: Path, port: int) -> subprocess.Popen:
    node = subprocess.Popen(
        [sys.executable, "-m", "services.edge.main", "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0",
         "--model-path", str(model), "--intra-op-threads", "1"],
        cwd=src, env={**os.environ, "PYTHONPATH": str(src)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while served_version(f"127.0.0.1:{port}") is None:
        if node.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the node from {src} did not start (exit {node.poll()})")
        time.sleep(0.2)
    return node


def frames(count: int):
    raw = edge_pb2.RawImage(width=640, height=480, format=edge_pb2.PIXEL_FORMAT_BGR, pixels=PIXELS)

    async def gen():
        for sequence in range(count):
            yield edge_pb2.Frame(sequence=sequence, raw=raw)

    return gen()


def channel(port: int) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 4 * MiB),
                                                                    ("grpc.use_local_subchannel_pool", 1)])


def bombs(port: int) -> str:
    stub = edge_pb2_grpc.EdgeFerStub(grpc.insecure_channel(f"127.0.0.1:{port}"))

    def send(data: bytes) -> str:
        try:
            stub.Classify(edge_pb2.ClassifyRequest(frame=edge_pb2.Frame(encoded=data)), timeout=60)
            return "OK"
        except grpc.RpcError as exc:
            return exc.code().name

    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(send, [png_bomb(30000, 30000), jpeg_claiming(60000, 60000)] * 2))
    return ", ".join(f"{codes.count(c)} {c}" for c in sorted(set(codes)))


async def fast_cameras(port: int) -> str:
    async with channel(port) as ch:
        stub = edge_pb2_grpc.EdgeFerStub(ch)

        async def camera() -> list[int]:
            try:
                return [r.status async for r in stub.StreamClassify(frames(60))]
            except grpc.aio.AioRpcError:
                return []

        streams = await asyncio.gather(*(camera() for _ in range(64)))
    answered = sum(len(s) for s in streams)
    dropped = sum(s.count(edge_pb2.FRAME_STATUS_DROPPED) for s in streams)
    return f"{answered} of {64 * 60} frames answered, {dropped} dropped"


async def cancelled_streams(port: int) -> str:
    channels = [channel(port) for _ in range(10)]

    async def one(k: int) -> None:
        call = edge_pb2_grpc.EdgeFerStub(channels[k % 10]).StreamClassify(frames(1000))
        seen = 0
        async for _ in call:
            seen += 1
            if seen == 3:
                call.cancel()
                return

    await asyncio.gather(*(one(k) for k in range(300)), return_exceptions=True)
    for ch in channels:
        await ch.close()
    return "300 streams cancelled mid-stream"


async def many_streams(port: int) -> str:
    channels = [channel(port) for _ in range(50)]
    crop = edge_pb2.Frame(raw=edge_pb2.RawImage(width=48, height=48, format=edge_pb2.PIXEL_FORMAT_GRAY,
                                                pixels=bytes(48 * 48)), is_face_crop=True)

    async def one(k: int) -> str:
        call = edge_pb2_grpc.EdgeFerStub(channels[k % 50]).StreamClassify()
        try:
            await call.write(crop)
            await call.read()
            await asyncio.sleep(2.0)  # all open at once
            await call.done_writing()
            return "open"
        except grpc.aio.AioRpcError as exc:
            return exc.code().name

    results = await asyncio.gather(*(one(k) for k in range(400)))
    for ch in channels:
        await ch.close()
    return ", ".join(f"{results.count(r)} {r}" for r in sorted(set(results)))


def measure(src: Path, model: Path, load, settle_s: float) -> tuple[str, dict, str]:
    port = free_port()
    node = start_node(src, model, port)
    try:
        before = memory_kib(node.pid)["VmRSS"]
        health: list[bool] = []
        stop = threading.Event()

        def probe() -> None:
            stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
            while not stop.is_set():
                try:
                    health.append(stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1)
                except grpc.RpcError:
                    health.append(False)
                time.sleep(0.25)

        prober = threading.Thread(target=probe)
        prober.start()
        try:
            outcome = load(port) if not asyncio.iscoroutinefunction(load) else asyncio.run(load(port))
        finally:
            stop.set()
            prober.join()
        peak = memory_kib(node.pid)["VmHWM"]
        time.sleep(settle_s)
        after = memory_kib(node.pid)["VmRSS"] if node.poll() is None else 0
        alive = "alive" if node.poll() is None else f"exited {node.returncode}"
        mem = {"before": before / 1024, "peak": peak / 1024, "after": after / 1024}
        return outcome, mem, f"{sum(health)}/{len(health)} SERVING, node {alive}"
    finally:
        node.terminate()
        node.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--node-src", type=Path, default=REPO, help="the checkout whose node runs")
    parser.add_argument("--model", type=Path, default=REPO / "models" / "ean-pruned.onnx")
    args = parser.parse_args()
    loads = [("4 decompression bombs at once", bombs, 1.0), ("64 fast 640x480 cameras, one connection", fast_cameras, 1.0),
             ("300 streams cancelled mid-stream", cancelled_streams, 5.0), ("400 streams over 50 connections", many_streams, 1.0)]
    print(f"node from {args.node_src}, model {args.model.name}, one onnxruntime thread; RSS in MiB")
    print("| load | outcome | RSS before | peak | after | health probes |")
    print("|---|---|---:|---:|---:|---|")
    for name, load, settle in loads:
        outcome, mem, health = measure(args.node_src, args.model, load, settle)
        print(f"| {name} | {outcome} | {mem['before']:.0f} | {mem['peak']:.0f} | {mem['after']:.0f} | {health} |", flush=True)


if __name__ == "__main__":
    main()
