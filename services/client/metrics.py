"""The device client's own metrics: latency as a camera sees it (send to result, network included), which
the node's pipeline histogram cannot show."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from services.edge.metrics import LATENCY_BUCKETS

FRAME_STATUSES = ("ok", "dropped", "invalid", "error")


class ClientMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.latency = Histogram("edgefer_client_latency_seconds", "Frame sent to its result received, as the client sees it",
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.frames = Counter("edgefer_client_frames", "Results received, by status", ["status"], registry=self.registry)
        for status in FRAME_STATUSES:
            self.frames.labels(status)
        self.reconnects = Counter("edgefer_client_reconnects", "Streams opened again after a failure", registry=self.registry)
