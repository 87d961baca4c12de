"""onnxruntime latency and throughput of EAN models, one row per model; prints a markdown table.

Latency: one face per call (batch 1), one intra-op thread, median and p99 over --runs calls after a
warm-up. Throughput: batch 64 with two threads. Faces are real when ../shared is present, else noise.

    python benchmarks/model_latency.py models/ean-baseline.onnx [more.onnx ...] [--node-threads]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from compression_worker.complexity import onnx_complexity
from compression_worker.latency import latency_ms
from edgefer.onnx_model import OnnxFaceClassifier

SHARED_TEST = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "fer2013" / "test_public.npz"


def sample_faces(n: int) -> np.ndarray:
    if SHARED_TEST.exists():
        return np.load(SHARED_TEST)["x"][:n]
    return np.random.default_rng(0).integers(0, 256, size=(n, 48, 48), dtype=np.uint8)


def throughput(classifier: OnnxFaceClassifier, faces: np.ndarray, batch: int, seconds: float = 3.0) -> float:
    chunk = faces[:batch]
    classifier.logits(chunk)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        classifier.logits(chunk)
        done += len(chunk)
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--node-threads", action="store_true",
                        help="also: faces/s as an edge node runs a call (threads that do not spin), one vs two threads")
    args = parser.parse_args()
    faces = sample_faces(256)
    print(f"machine: {platform.machine()}, {platform.processor() or platform.platform()}, onnxruntime {ort.__version__}")
    print("| model | size (KB) | MACs/face (M) | latency p50 (ms) | latency p99 (ms) | batch-64 faces/s (2 threads) |")
    print("|---|---:|---:|---:|---:|---:|")
    for path in args.models:
        p50, p99 = latency_ms(OnnxFaceClassifier(path, intra_op_threads=1), faces, args.runs)
        rate = throughput(OnnxFaceClassifier(path, intra_op_threads=2), faces, 64)
        macs = onnx_complexity(path).mmacs
        print(f"| {path.name} | {path.stat().st_size / 1024:.0f} | {macs:.2f} | {p50:.3f} | {p99:.3f} | {rate:,.0f} |")
    if args.node_threads:
        print_node_threads(args.models, faces)


def print_node_threads(models: list[Path], faces: np.ndarray) -> None:
    """One call's speed on a node's non-spinning threads: what splitting the cores among calls buys."""
    print("\n| model | threads per call | batch 1 faces/s | batch 8 faces/s |")
    print("|---|---:|---:|---:|")
    for path in models:
        for threads in (1, 2):
            classifier = OnnxFaceClassifier(path, intra_op_threads=threads, spin=False)
            one, eight = throughput(classifier, faces, 1), throughput(classifier, faces, 8)
            print(f"| {path.name} | {threads} | {one:,.0f} | {eight:,.0f} |")


if __name__ == "__main__":
    main()
