"""Prometheus metrics of the compression worker, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram

from edgefer.jobs.status import ENDED as OUTCOMES

STAGES = ("idle", "teacher", "distill", "prune", "export", "evaluate", "gate", "publish", "rollout")


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.stage_seconds = Histogram(
            "edgefer_worker_stage_seconds", "Wall time of a pipeline stage", ["stage"],
            buckets=(1, 10, 60, 300, 900, 1800, 3600, 7200), registry=r,
        )
        self.jobs = Counter("edgefer_worker_jobs", "Jobs ended, by outcome", ["outcome"], registry=r)
        for outcome in OUTCOMES:
            self.jobs.labels(outcome)
        self.stage = Enum("edgefer_worker_stage", "The stage the worker is in", states=list(STAGES), registry=r)
        self.progress = Gauge("edgefer_worker_job_progress_ratio", "Share of the current job done (0..1)", registry=r)
        self.last_published_accuracy = Gauge(
            "edgefer_worker_last_published_accuracy", "Held-back accuracy of the last published model", registry=r
        )
