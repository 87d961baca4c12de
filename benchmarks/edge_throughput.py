"""Edge node throughput and end-to-end latency through the real gRPC server on loopback; prints a table.

The node runs as its own process(es) (`edgefer-edge`, `--workers` serving processes), as on a device.
The clients are either one asyncio process (grpc.aio, the cheapest Python client) or, with `--client
compiled`, the C++ load generator of benchmarks/loadgen (`make loadgen`), which takes about half the
CPU per frame from the cores it shares with the node. Each stream is closed-loop: it sends its next
frame when the previous result arrives, so nothing is dropped and the latency is the full round trip.
Workloads: (a) already-cropped 48x48 faces, (b) 640x480 JPEG frames with one face that the node must
detect; the face stays in place from frame to frame, as in a video of someone facing the camera, and
`--redetect-every 1` makes the node search every whole frame instead.

    python benchmarks/edge_throughput.py --model models/ean-pruned.onnx --streams 1 4 16 --seconds 10 --repeat 3 \
        --workers 2 --batch-concurrency 1 --client compiled
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path

import cv2
import grpc
import numpy as np

from edgefer.localfleet.edge_nodes import served_version
from edgefer.localfleet.ports import free_port
from edgefer.v1 import edge_pb2, edge_pb2_grpc

SHARED_TEST = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "fer2013" / "test_public.npz"


def labelled_faces(n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """FER2013 test_public faces and labels when ../shared is there, else noise (for timing only)."""
    if SHARED_TEST.exists():
        data = np.load(SHARED_TEST)
        return data["x"][:n], data["y"][:n]
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n or 256, 48, 48), dtype=np.uint8), rng.integers(0, 7, size=n or 256)


def faces(n: int) -> np.ndarray:
    return labelled_faces(n)[0]


def crop_frames(n: int) -> list[edge_pb2.Frame]:
    return [
        edge_pb2.Frame(raw=edge_pb2.RawImage(width=48, height=48, format=edge_pb2.PIXEL_FORMAT_GRAY, pixels=f.tobytes()),
                       is_face_crop=True)
        for f in faces(n)
    ]


def scene_frames(n: int, hold: int = 15) -> list[edge_pb2.Frame]:
    """A video of `n` people in turn: each face is on screen for `hold` frames (half a second at 30
    frames/s), drifting 3 pixels a frame, on a 640x480 background."""
    out = []
    for face in faces(n):
        big = cv2.resize(face, (240, 240), interpolation=cv2.INTER_CUBIC)
        for t in range(hold):
            scene = np.full((480, 640), 90, np.uint8)
            x, y = 180 + 3 * t, 110 + t
            scene[y : y + 240, x : x + 240] = big
            _, jpeg = cv2.imencode(".jpg", scene, [cv2.IMWRITE_JPEG_QUALITY, 85])
            out.append(edge_pb2.Frame(encoded=jpeg.tobytes()))
    return out


async def closed_loop_stream(channel: grpc.aio.Channel, frames: list[edge_pb2.Frame], stop: asyncio.Event,
                             latencies: list[float], faces_found: list[int], fps: float, phase: float) -> None:
    """One stream: send a frame, wait for its result, repeat (so nothing queues and nothing is dropped);
    with `fps` > 0 the next frame waits for its tick, as a camera's would, the first tick `phase` s late
    (cameras are not in step with each other)."""
    frames = [edge_pb2.Frame.FromString(f.SerializeToString()) for f in frames]  # this stream's own, to number
    call = edge_pb2_grpc.EdgeFerStub(channel).StreamClassify()
    i = 0
    start = time.perf_counter() + phase
    while not stop.is_set():
        if fps > 0:
            await asyncio.sleep(max(0.0, start + i / fps - time.perf_counter()))
        frame = frames[i % len(frames)]
        frame.sequence = i
        sent = time.perf_counter()
        await call.write(frame)
        result = await call.read()
        latencies.append(time.perf_counter() - sent)
        faces_found.append(len(result.faces))
        assert result.sequence == i and result.status == edge_pb2.FRAME_STATUS_OK, result
        i += 1
    await call.done_writing()


def wait_for_model(target: str, node: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """Until the node serves a model: with --workers it loads one only once its replicas are up.
    (`served_version` closes its channel: no sync gRPC channel stays in the clients' process.)"""
    deadline = time.monotonic() + timeout_s
    while served_version(target) is None:
        if node.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the edge node did not serve a model (exit code {node.poll()})")
        time.sleep(0.2)


def process_tree(pid: int) -> list[int]:
    """The node's process and its children (the serving replicas), from Linux /proc."""
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return [pid, *children]


def cpu_seconds(pids: list[int]) -> float:
    """User+system CPU seconds these processes have used so far (Linux /proc; nan elsewhere)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Row:
    rate: float
    p50_ms: float
    p99_ms: float
    faces_per_frame: float
    node_cpu_ms: float  # node CPU per frame: what a frame costs the device, free of the machine's noise
    client_cpu_ms: float  # the load generator's CPU per frame, taken from the same cores


def measure_compiled(loadgen: Path, target: str, node_pids: list[int], frames: list[edge_pb2.Frame], streams: int,
                     seconds: float, fps: float = 0.0) -> Row:
    """The same measurement by the compiled load generator (benchmarks/loadgen/edge_load.cc): one thread and
    one connection per stream, so the client takes less of the cores the node runs on."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "frames.bin"
        path.write_bytes(b"".join(len(b).to_bytes(4, "little") + b for b in (f.SerializeToString() for f in frames)))
        out = subprocess.run([str(loadgen), target, str(path), str(streams), str(seconds), "1.0", str(fps),
                              ",".join(map(str, node_pids))],
                             check=True, capture_output=True, text=True).stdout
    r = json.loads(out)
    n = r["frames"]
    return Row(n / r["seconds"], r["p50_ms"], r["p99_ms"], r["faces_per_frame"], r["node_cpu_s"] / n * 1e3,
               r["client_cpu_s"] / n * 1e3)


def median_row(runs: list[Row]) -> Row:
    """Each column's median over repeated runs."""
    return Row(*(float(np.median([getattr(r, f.name) for r in runs])) for f in fields(Row)))


async def measure(target: str, node_pids: list[int], frames: list[edge_pb2.Frame], streams: int, seconds: float,
                  fps: float = 0.0) -> Row:
    """Frames/s, latency p50/p99 (ms), faces found per frame and CPU per frame over `seconds`, after one
    second of warm-up; one channel per stream."""
    channels = [grpc.aio.insecure_channel(target) for _ in range(streams)]
    stop = asyncio.Event()
    per_stream: list[list[float]] = [[] for _ in range(streams)]
    found: list[list[int]] = [[] for _ in range(streams)]
    tasks = [asyncio.create_task(closed_loop_stream(c, frames, stop, per_stream[k], found[k], fps, k / (streams * fps) if fps else 0.0)) for k, c in enumerate(channels)]
    await asyncio.sleep(1.0)  # warm-up, not counted
    counts = [len(x) for x in per_stream]
    start, node_start, client_start = time.perf_counter(), cpu_seconds(node_pids), own_cpu_seconds()
    await asyncio.sleep(seconds)
    ends = [len(x) for x in per_stream]
    elapsed = time.perf_counter() - start
    node_cpu, client_cpu = cpu_seconds(node_pids) - node_start, own_cpu_seconds() - client_start
    stop.set()
    await asyncio.gather(*tasks)
    for c in channels:
        await c.close()
    lat = np.asarray([v for k, xs in enumerate(per_stream) for v in xs[counts[k] : ends[k]]]) * 1e3
    faces = np.mean([v for k, xs in enumerate(found) for v in xs[counts[k] : ends[k]]])
    n = len(lat)
    return Row(n / elapsed, float(np.percentile(lat, 50)), float(np.percentile(lat, 99)), float(faces),
               node_cpu / n * 1e3, client_cpu / n * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/ean-baseline.onnx"))
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="node's onnxruntime threads")
    parser.add_argument("--no-batch-across-streams", dest="batch_across_streams", action="store_false",
                        help="one onnxruntime call per request instead of the node's dynamic batching")
    parser.add_argument("--batch-concurrency", type=int, default=2, help="node: batches computing at once (per process)")
    parser.add_argument("--workers", type=int, default=1, help="node: serving processes sharing the port")
    parser.add_argument("--fps", type=float, default=0.0, help="frames/s per stream (0: as fast as the node answers)")
    parser.add_argument("--workloads", nargs="+", choices=["crops", "scenes"], default=["crops", "scenes"])
    parser.add_argument("--redetect-every", type=int, default=8, help="node: whole-frame detection every N stream frames")
    parser.add_argument("--fer-python", type=Path, default=None,
                        help="also run the same frames through the `fer` package with this interpreter (.venv-fer/bin/python)")
    parser.add_argument("--batch-max-wait-ms", type=float, default=0.0, help="with batching: how long a lone face waits")
    parser.add_argument("--client", choices=["python", "compiled"], default="python",
                        help="load generator: grpc.aio in this process, or the compiled one (make loadgen) in its own")
    parser.add_argument("--loadgen", type=Path, default=Path("build/loadgen/edge-load"), help="the compiled load generator")
    parser.add_argument("--repeat", type=int, default=1,
                        help="measure each row this many times and print the medians with the range (a shared machine's "
                             "speed drifts by 20%% within minutes)")
    args = parser.parse_args()
    port = free_port()
    node = subprocess.Popen(
        [sys.executable, "-m", "services.edge.main", "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0",
         "--model-path", str(args.model), "--intra-op-threads", str(args.threads), "--no-drop-stale-frames",
         "--batch-across-streams" if args.batch_across_streams else "--no-batch-across-streams",
         "--batch-max-wait-ms", str(args.batch_max_wait_ms), "--batch-concurrency", str(args.batch_concurrency), "--redetect-every", str(args.redetect_every),
         "--workers", str(args.workers)],
        stderr=subprocess.DEVNULL,
    )
    target = f"127.0.0.1:{port}"
    try:
        wait_for_model(target, node)
        time.sleep(1.0)
        node_pids = process_tree(node.pid)
        mode = (f"batched across streams (max wait {args.batch_max_wait_ms} ms)" if args.batch_across_streams
                else "one call per frame")
        print(f"model {args.model}, node threads {args.threads} over {args.workers} process(es), {mode}, whole-frame detection every {args.redetect_every} "
              f"frames, {args.seconds:.0f}s per row, {args.client} client, closed-loop streams"
              + (f" paced at {args.fps:g} frames/s each" if args.fps else ""))
        print(f"| workload | streams | frames/s | p50 (ms) | p99 (ms) | faces/frame | node CPU ms/frame | client CPU ms/frame "
              f"| range of {args.repeat} run(s): frames/s; p99 |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
        workloads = {"crops": ("48x48 crops", crop_frames), "scenes": ("640x480 JPEG + detection", scene_frames)}
        for name, make in (workloads[w] for w in args.workloads):
            frames = make(256 if make is crop_frames else 32)
            for streams in args.streams:
                if args.client == "compiled":
                    runs = [measure_compiled(args.loadgen, target, node_pids, frames, streams, args.seconds, args.fps)
                            for _ in range(args.repeat)]
                else:
                    runs = [asyncio.run(measure(target, node_pids, frames, streams, args.seconds, args.fps)) for _ in range(args.repeat)]
                r = median_row(runs)
                rates, p99s = [x.rate for x in runs], [x.p99_ms for x in runs]
                print(f"| {name} | {streams} | {r.rate:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.faces_per_frame:.2f} "
                      f"| {r.node_cpu_ms:.3f} | {r.client_cpu_ms:.3f} "
                      f"| {min(rates):,.0f}-{max(rates):,.0f}; {min(p99s):.1f}-{max(p99s):.1f} |", flush=True)
    finally:
        node.terminate()
        node.wait(timeout=30)
    if args.fer_python:
        run_fer(args.fer_python, scene_frames(32), args.seconds)


def run_fer(python: Path, scenes: list[edge_pb2.Frame], seconds: float) -> None:
    """The same scenes (and the test faces, for accuracy) through the `fer` package, in its own virtualenv."""
    crops, labels = labelled_faces()
    with tempfile.TemporaryDirectory() as tmp:
        frames = Path(tmp) / "frames.npz"
        jpegs = {f"jpeg_{i:03d}": np.frombuffer(f.encoded, np.uint8) for i, f in enumerate(scenes)}
        np.savez(frames, crops=crops, labels=labels, **jpegs)
        script = Path(__file__).resolve().parent / "fer_pipeline.py"
        subprocess.run([str(python), str(script), str(frames), "--seconds", str(seconds)], check=True)


if __name__ == "__main__":
    main()
