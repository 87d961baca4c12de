"""onnxruntime latency of one face per call (batch 1, one intra-op thread), as the edge runs it."""

from __future__ import annotations

import time

import numpy as np

from edgefer.onnx_model import OnnxFaceClassifier


def latency_ms(classifier: OnnxFaceClassifier, faces: np.ndarray, runs: int, warmup: int = 50) -> tuple[float, float]:
    """Median and p99 in milliseconds over `runs` calls after `warmup` calls."""
    for i in range(warmup):
        classifier.logits(faces[i % len(faces)][None])
    times = np.empty(runs)
    for i in range(runs):
        face = faces[i % len(faces)][None]
        start = time.perf_counter()
        classifier.logits(face)
        times[i] = time.perf_counter() - start
    return float(np.median(times) * 1e3), float(np.percentile(times, 99) * 1e3)
