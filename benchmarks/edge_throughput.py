"""Edge node throughput and end-to-end latency through the real gRPC server on loopback; prints a table.

The node runs as its own process (`edgefer-edge`), as on a device. Each client stream is closed-loop:
it sends its next frame when the previous result arrives, so nothing is dropped and the latency is
the full round trip. Workloads: (a) already-cropped 48x48 faces, (b) 640x480 JPEG frames with one
face that the node must detect.

    python benchmarks/edge_throughput.py --model models/ean-baseline.onnx --streams 1 4 16 --seconds 10
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import grpc
import numpy as np

from edgefer.localfleet.ports import free_port
from edgefer.v1 import edge_pb2, edge_pb2_grpc

SHARED_TEST = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "fer2013" / "test_public.npz"


def faces(n: int) -> np.ndarray:
    if SHARED_TEST.exists():
        return np.load(SHARED_TEST)["x"][:n]
    return np.random.default_rng(0).integers(0, 256, size=(n, 48, 48), dtype=np.uint8)


def crop_frames(n: int) -> list[edge_pb2.Frame]:
    return [
        edge_pb2.Frame(raw=edge_pb2.RawImage(width=48, height=48, format=edge_pb2.PIXEL_FORMAT_GRAY, pixels=f.tobytes()),
                       is_face_crop=True)
        for f in faces(n)
    ]


def scene_frames(n: int) -> list[edge_pb2.Frame]:
    out = []
    for face in faces(n):
        scene = np.full((480, 640), 90, np.uint8)
        scene[120:360, 200:440] = cv2.resize(face, (240, 240), interpolation=cv2.INTER_CUBIC)
        ok, jpeg = cv2.imencode(".jpg", scene, [cv2.IMWRITE_JPEG_QUALITY, 85])
        out.append(edge_pb2.Frame(encoded=jpeg.tobytes()))
    return out


def closed_loop_stream(stub, frames: list[edge_pb2.Frame], stop: threading.Event, latencies: list[float]) -> None:
    turn = threading.Semaphore(1)
    sent_at: list[float] = []

    def requests():
        i = 0
        while not stop.is_set():
            turn.acquire()
            frame = edge_pb2.Frame()
            frame.CopyFrom(frames[i % len(frames)])
            frame.sequence = i
            sent_at.append(time.perf_counter())
            i += 1
            yield frame

    for result in stub.StreamClassify(requests()):
        latencies.append(time.perf_counter() - sent_at[result.sequence])
        turn.release()


def measure(target: str, frames: list[edge_pb2.Frame], streams: int, seconds: float) -> tuple[float, float, float]:
    channels = [grpc.insecure_channel(target) for _ in range(streams)]
    stop = threading.Event()
    per_stream: list[list[float]] = [[] for _ in range(streams)]
    threads = [
        threading.Thread(target=closed_loop_stream, args=(edge_pb2_grpc.EdgeFerStub(c), frames, stop, per_stream[k]))
        for k, c in enumerate(channels)
    ]
    for t in threads:
        t.start()
    time.sleep(1.0)  # warm-up, not counted
    counts = [len(x) for x in per_stream]
    start = time.perf_counter()
    time.sleep(seconds)
    elapsed = time.perf_counter() - start
    window = [lat for k, lat_list in enumerate(per_stream) for lat in lat_list[counts[k]:]]
    stop.set()
    for t in threads:
        t.join(timeout=5)
    for c in channels:
        c.close()
    lat = np.asarray(window) * 1e3
    return len(window) / elapsed, float(np.percentile(lat, 50)), float(np.percentile(lat, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/ean-baseline.onnx"))
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="node's onnxruntime threads")
    parser.add_argument("--batch-across-streams", action="store_true", help="node micro-batches faces of concurrent streams")
    args = parser.parse_args()
    port = free_port()
    node = subprocess.Popen(
        [sys.executable, "-m", "services.edge.main", "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0",
         "--model-path", str(args.model), "--intra-op-threads", str(args.threads), "--no-drop-stale-frames",
         "--batch-across-streams" if args.batch_across_streams else "--no-batch-across-streams"],
        stderr=subprocess.DEVNULL,
    )
    target = f"127.0.0.1:{port}"
    try:
        grpc.channel_ready_future(grpc.insecure_channel(target)).result(timeout=30)
        time.sleep(1.0)
        mode = "micro-batched across streams" if args.batch_across_streams else "one call per frame"
        print(f"model {args.model}, node threads {args.threads}, {mode}, {args.seconds:.0f}s per row, closed-loop streams")
        print("| workload | streams | frames/s | p50 (ms) | p99 (ms) |")
        print("|---|---:|---:|---:|---:|")
        for name, frames in (("48x48 crops", crop_frames(256)), ("640x480 JPEG + detection", scene_frames(64))):
            for streams in args.streams:
                rate, p50, p99 = measure(target, frames, streams, args.seconds)
                print(f"| {name} | {streams} | {rate:,.0f} | {p50:.2f} | {p99:.2f} |", flush=True)
    finally:
        node.terminate()
        node.wait(timeout=30)


if __name__ == "__main__":
    main()
