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
        for stage in STAGES[1:]:  # every stage's series exists from the start: a panel of rates is 0, not NaN
            self.stage_seconds.labels(stage)
        # per fleet, and absent until the first publish (not a misleading 0% / version 0 before it)
        self.last_published_accuracy = Gauge(
            "edgefer_worker_last_published_accuracy", "Held-back accuracy of the last published model", ["fleet"],
            registry=r,
        )
        self.last_published_version = Gauge(
            "edgefer_worker_last_published_version", "The version the worker last published", ["fleet"], registry=r
        )
        self.last_promoted_version = Gauge(
            "edgefer_worker_last_promoted_version",
            "The version the worker last made the fleet's desired version (a promoting publish or a promoted rollout)",
            ["fleet"],
            registry=r,
        )
