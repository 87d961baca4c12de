"""The job client against a real redis-server: a submitted job is validated and queued once per id, and
follow_job reports every record until the job ends (or gives up at its timeout)."""

from __future__ import annotations

import json
import threading

import pytest

from edgefer.jobs.client import follow_job, submit_job
from edgefer.jobs.queue import JobQueue
from edgefer.jobs.spec import JobError, JobSpec
from edgefer.jobs.status import JobStatusStore
from edgefer.registry.connection import RegistryAccess, connect


def test_a_job_is_submitted_then_followed_to_its_end(redis_server) -> None:
    client = connect(RegistryAccess(redis_url=redis_server.url))
    status = JobStatusStore(client)
    spec = JobSpec.parse(json.dumps({"data": "faces.npz", "job_id": "j1"}))
    assert submit_job(client, spec) == "j1" and status.get("j1")["state"] == "queued"
    delivery = JobQueue(client, consumer="w").next(block_ms=100, claim_idle_ms=60_000)
    assert JobSpec.parse(delivery.payload) == spec
    with pytest.raises(JobError):
        JobSpec.parse(json.dumps({"data": "faces.npz", "job_id": "j2", "rounds": "two"}))

    def work() -> None:
        for stage in ("teacher", "distill"):
            status.update("j1", state="running", stage=stage)
            threading.Event().wait(0.2)
        status.update("j1", state="published", published_version=3)

    threading.Thread(target=work).start()
    seen: list[str] = []
    record = follow_job(status, "j1", lambda r: seen.append(r.get("stage", "")), poll_s=0.05, timeout_s=10)
    assert record["state"] == "published" and record["published_version"] == 3
    assert {"teacher", "distill"} <= set(seen)
    assert follow_job(status, "never-submitted", poll_s=0.05, timeout_s=0.2) == {"state": "timeout"}


def test_the_queue_remakes_its_consumer_group_when_redis_lost_its_data(redis_server) -> None:
    """A Redis restarted without its data has no group: the worker's queue makes it again instead of failing
    every read with NOGROUP forever."""
    client = connect(RegistryAccess(redis_url=redis_server.url))
    queue = JobQueue(client, consumer="w")
    client.flushall()
    queue.submit(json.dumps({"data": "faces.npz", "job_id": "after-flush"}))
    delivery = queue.next(block_ms=100, claim_idle_ms=60_000)
    assert delivery is not None and JobSpec.parse(delivery.payload).job_id == "after-flush"
