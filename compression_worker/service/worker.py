"""`edgefer-worker-service`: take jobs from the Redis Stream and run them, one at a time, forever.

A bad job fails with its message in the job status and the worker goes on with the next; a worker
that was killed picks its job up again on restart (or another worker claims it once it has been
silent for `claim_idle_s`) and resumes at the stage it had reached.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import traceback

import redis
import torch
from prometheus_client import start_http_server

from compression_worker.lineage_store import LineageStore, adopt_shipped_teachers
from compression_worker.service.fleet_metrics import FleetCollector
from compression_worker.service.job_checks import check_runnable
from compression_worker.service.job_runner import JobContext, JobRunner
from compression_worker.service.metrics import WorkerMetrics
from compression_worker.service.settings import WorkerServiceSettings
from compression_worker.training.run import select_device
from edgefer.datasets import DatasetError
from edgefer.jobs.lineage import LineageIndex
from edgefer.jobs.queue import Delivery, JobQueue
from edgefer.jobs.spec import JobError, JobSpec
from edgefer.jobs.status import JobStatusStore
from edgefer.registry.connection import connect, connect_for_scrapes
from edgefer.registry.signing import ManifestSigner
from edgefer.registry.store import ModelRegistry

log = logging.getLogger("edgefer.worker")


class Worker:
    def __init__(self, settings: WorkerServiceSettings, metrics: WorkerMetrics | None = None) -> None:
        if settings.signing_key is None:
            raise ValueError("setting signing_key is required: the worker signs what it publishes")
        self.settings = settings
        client = self.client = connect(settings)
        self.registry = ModelRegistry(client, settings.fleet)
        self.lineage = LineageStore(settings.lineage_dir, LineageIndex(client))
        self.signer = ManifestSigner(settings.signing_key)
        self.queue = JobQueue(client, settings.fleet, settings.consumer)
        self.status = JobStatusStore(client, settings.fleet)
        self.metrics = metrics or WorkerMetrics()
        scrapes = connect_for_scrapes(settings)
        self.metrics.registry.register(
            FleetCollector(ModelRegistry(scrapes, settings.fleet), JobQueue(scrapes, settings.fleet, settings.consumer))
        )
        self.stop = threading.Event()

    def index_lineage(self) -> bool:
        """Add the shipped teachers and index the lineage folder in Redis; False while Redis cannot be reached (the
        worker tries again once it can, so a worker that started before Redis still offers every teacher)."""
        try:
            shipped = adopt_shipped_teachers(self.lineage, self.settings.shipped_teachers)
            if shipped:
                log.info("shipped teachers in the lineage: %s",
                         ", ".join(f"{a.job_id} ({a.held_back_accuracy:.2%})" for a in shipped))
            log.info("lineage: %d artefacts in %s", self.lineage.reindex(), self.settings.lineage_dir)
            return True
        except redis.RedisError as exc:
            log.warning("lineage not indexed in Redis yet (%s); jobs still use %s", exc, self.settings.lineage_dir)
            return False

    def run_forever(self) -> None:
        self.metrics.stage.state("idle")
        indexed = self.index_lineage()
        while not self.stop.is_set():
            try:
                delivery = self.queue.next(block_ms=1000, claim_idle_ms=int(self.settings.claim_idle_s * 1000))
            except redis.RedisError as exc:
                log.warning("registry unreachable (%s); retrying", exc)
                self.stop.wait(2.0)
                continue
            indexed = indexed or self.index_lineage()
            if delivery is not None:
                self.handle(delivery)

    def handle(self, delivery: Delivery) -> str:
        """Run one delivered job to its end; returns the outcome (the entry is acknowledged in every case)."""
        try:
            spec = JobSpec.parse(delivery.payload)
        except JobError as exc:
            job_id = f"entry-{delivery.entry_id}"
            self.status.update(job_id, state="failed", error=str(exc))
            return self._end(delivery, "failed", job_id)
        if self.status.finished(spec.job_id):  # delivered twice: it ran to its end already
            log.info("job %s already ended; acknowledging the duplicate delivery", spec.job_id)
            self.queue.ack(delivery)
            return "duplicate"
        log.info("job %s: %s", spec.job_id, spec.to_json())
        self.status.update(spec.job_id, state="running", spec=spec.to_json(), worker=self.settings.consumer)
        try:
            check_runnable(spec)
            registry = ModelRegistry(self.client, spec.target_fleet) if spec.target_fleet else self.registry
            profile = registry.stored_profile() or self.settings.default_profile()
            ctx = JobContext(spec, self.settings.work_dir / spec.job_id, registry, self.signer, self.settings.gate(profile),
                             self.status, self.metrics, lambda: self.queue.keep_alive(delivery), self.lineage,
                             self.settings.threads, select_device(self.settings.device))
            outcome = JobRunner(ctx).run()
        except (JobError, DatasetError, ValueError, FileNotFoundError) as exc:  # LineageError, ProfileError too
            self.status.update(spec.job_id, state="failed", error=str(exc))
            return self._end(delivery, "failed", spec.job_id)
        except Exception as exc:  # a bug must not take the worker down with the job
            log.error("job %s crashed:\n%s", spec.job_id, traceback.format_exc())
            self.status.update(spec.job_id, state="failed", error=f"{type(exc).__name__}: {exc}")
            return self._end(delivery, "failed", spec.job_id)
        self.status.update(spec.job_id, state=outcome, percent=100.0, eta_s=0)
        return self._end(delivery, outcome, spec.job_id)

    def _end(self, delivery: Delivery, outcome: str, job_id: str) -> str:
        self.queue.ack(delivery)
        self.metrics.jobs.labels(outcome).inc()
        self.metrics.stage.state("idle")
        self.metrics.progress.set(0)  # idle: no job in progress (a failed job must not show 100% forever)
        log.info("job %s: %s", job_id, outcome)
        return outcome


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        settings = WorkerServiceSettings.from_args(argv, "edgefer-worker-service", __doc__.splitlines()[0])
        worker = Worker(settings)
    except (ValueError, OSError) as exc:
        print(f"edgefer-worker-service: error: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(settings.threads)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, registry=worker.metrics.registry)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop.set())
    log.info("taking jobs from %s as %s", worker.queue.stream, settings.consumer)
    worker.run_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
