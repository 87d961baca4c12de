"""Prometheus metrics of an edge node, in a registry of its own (several nodes may share a process in tests)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from edgefer.labels import CLASSES

# Every labelled series exists at 0 from the start, so that increase() and alerts see its first event.
FRAME_STATUSES = ("ok", "invalid", "dropped")
ERROR_CODES = ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "UNAVAILABLE", "DEADLINE_EXCEEDED")
# refusals of a version by the check that failed; then the node's own faults: "record" (the desired record cannot be
# read), "disk" (the model cache cannot be written: the model is served from memory), "error" (a bug)
SYNC_FAILURE_REASONS = ("missing", "key", "signature", "identity", "input", "integrity", "load", "record", "disk", "error")
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)
# Per-version times, finer than LATENCY_BUCKETS: a rollout compares canary and stable percentiles from them. Bounds
# a quarter octave apart (2 ** 0.25, as Prometheus's native histograms at schema 2), 15 us to 2 s: a 20% slower
# model moves the median across a bucket bound at any speed a board runs at, down to a small model's 0.1 ms a face.
VERSION_LATENCY_BUCKETS = tuple(float(f"{0.001 * 2 ** (k / 4):.2g}") for k in range(-24, 45))
CONFIDENCE_BUCKETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
FACES_BUCKETS = (0, 1, 2, 3, 5, 10)
# What every serving process of a node counts; the rest describes the node's model and its registry link,
# kept by the main process alone. A node's /metrics adds these up over its processes.
TRAFFIC_FAMILIES = frozenset({
    "edgefer_request_latency_seconds", "edgefer_frames", "edgefer_faces", "edgefer_dropped_frames", "edgefer_errors",
    "edgefer_active_streams", "edgefer_inference_batch_faces",
    "edgefer_predictions", "edgefer_prediction_confidence", "edgefer_frame_faces", "edgefer_version_latency_seconds",
    "edgefer_version_model_seconds",
})
# The field statistics of each model version: what a rollout controller compares between canary and stable
# nodes, since nodes see no labels (edgefer/rollouts/analysis.py). Summarised into the node's status record.
FIELD_FAMILIES = ("edgefer_predictions", "edgefer_prediction_confidence", "edgefer_frame_faces",
                  "edgefer_version_latency_seconds", "edgefer_version_model_seconds")


class EdgeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.latency = Histogram(
            "edgefer_request_latency_seconds", "Time per frame by pipeline stage", ["stage"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.frames = Counter("edgefer_frames", "Frames received, by outcome", ["status"], registry=r)
        # labelled children looked up once: the per-frame path runs a thousand times a second
        self.stage_latency = {stage: self.latency.labels(stage) for stage in ("decode", "detect", "infer", "total")}
        self.frames_ok = self.frames.labels("ok")
        self.faces = Counter("edgefer_faces", "Faces classified", registry=r)
        self.dropped = Counter("edgefer_dropped_frames", "Stale stream frames skipped (latest frame wins)", registry=r)
        self.errors = Counter("edgefer_errors", "Requests or frames refused, by gRPC status code", ["code"], registry=r)
        self.active_streams = Gauge("edgefer_active_streams", "Open StreamClassify calls", registry=r)
        self.model = Info("edgefer_model", "The model being served", registry=r)
        self.node = Info("edgefer_node", "Who this node is (its registry node id), to name it on dashboards", registry=r)
        self.swaps = Counter("edgefer_model_swaps", "Model swaps", registry=r)
        self.batch_faces = Histogram(
            "edgefer_inference_batch_faces", "Faces per onnxruntime call", buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r
        )
        self.replica_restarts = Counter(
            "edgefer_replica_restarts", "Serving processes of this node started again after they died (settings.workers > 1)", registry=r
        )
        self.registry_connected = Gauge("edgefer_registry_connected", "1 while the model registry (Redis) is reachable", registry=r)
        self.clock_skew = Gauge(
            "edgefer_clock_skew_seconds", "This board's clock minus the registry's (Redis TIME) at its last status write",
            registry=r,
        )
        self.sync_failures = Counter(
            "edgefer_model_sync_failures", "Registry versions refused, by reason (signature, integrity, load)", ["reason"], registry=r
        )
        for counter, labels in ((self.frames, FRAME_STATUSES), (self.errors, ERROR_CODES),
                                (self.sync_failures, SYNC_FAILURE_REASONS)):
            for label in labels:
                counter.labels(label)
        self.predictions = Counter("edgefer_predictions", "Faces classified, by model version and predicted emotion",
                                   ["version", "emotion"], registry=r)
        self.confidence = Histogram("edgefer_prediction_confidence", "Top-1 probability of each classified face, by model version",
                                    ["version"], buckets=CONFIDENCE_BUCKETS, registry=r)
        self.frame_faces = Histogram("edgefer_frame_faces", "Faces per answered frame, by model version", ["version"],
                                     buckets=FACES_BUCKETS, registry=r)
        self.version_latency = Histogram("edgefer_version_latency_seconds", "Time per answered frame, by model version",
                                         ["version"], buckets=VERSION_LATENCY_BUCKETS, registry=r)
        # The model's own time, without the frame's queueing and hops: a model slower by half its time is plain
        # here when it is a few percent of a frame's time.
        self.version_model = Histogram("edgefer_version_model_seconds",
                                       "onnxruntime time per face (a call's time over its faces), by model version",
                                       ["version"], buckets=VERSION_LATENCY_BUCKETS, registry=r)
        self._field: dict[str, FieldSeries] = {}
        self.sync_seconds = Histogram(
            "edgefer_model_sync_seconds", "Fetch, verify, load and swap of a new version", buckets=LATENCY_BUCKETS, registry=r
        )

    def _series(self, version: str) -> FieldSeries:
        series = self._field.get(version)
        if series is None:
            series = self._field[version] = FieldSeries(
                [self.predictions.labels(version, name) for name in CLASSES], self.confidence.labels(version),
                self.frame_faces.labels(version), self.version_latency.labels(version),
                self.version_model.labels(version))
        return series

    def record_model_time(self, version: str, seconds: float, faces: int) -> None:
        """One onnxruntime call of `version` on `faces` faces."""
        if faces:
            self._series(version).model.observe(seconds / faces)

    def record_field(self, version: str, probabilities: np.ndarray, seconds: float) -> None:
        """One answered frame's field statistics under the version that classified it."""
        series = self._series(version)
        series.frame_faces.observe(len(probabilities))
        series.latency.observe(seconds)
        if len(probabilities):
            top = probabilities.argmax(axis=1)
            for k, count in enumerate(np.bincount(top, minlength=len(CLASSES))):
                if count:
                    series.emotions[k].inc(int(count))
            for p in probabilities[np.arange(len(top)), top]:
                series.confidence.observe(float(p))


@dataclass
class FieldSeries:
    """One version's labelled children, looked up once (the per-frame path runs a thousand times a second)."""

    emotions: list
    confidence: object
    frame_faces: object
    latency: object
    model: object
