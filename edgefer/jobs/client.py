"""Submitting a job and following it to its end: the library calls behind `edgefer-jobs submit --follow` and the
demo, so every submitter goes through `JobSpec` validation and sees the same status records."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from edgefer.jobs.queue import JobQueue
from edgefer.jobs.spec import JobSpec
from edgefer.jobs.status import ENDED, JobStatusStore


def submit_job(client: redis.Redis, spec: JobSpec, fleet: str = "default", submitter: str = "submitter") -> str:
    """Queue a validated job; a resubmitted job keeps its status record (and publishes once). Returns its id."""
    status = JobStatusStore(client, fleet)
    if status.get(spec.job_id) is None:
        status.update(spec.job_id, state="queued", spec=spec.to_json())
    JobQueue(client, fleet, submitter).submit(spec.to_json())
    return spec.job_id


def follow_job(
    status: JobStatusStore,
    job_id: str,
    on_update: Callable[[dict], None] = lambda record: None,
    poll_s: float = 1.0,
    timeout_s: float | None = None,
) -> dict:
    """The job's status record once it ended (or when `timeout_s` ran out: then its state is as it was, or
    "timeout" if it never had one); `on_update` sees every record read meanwhile (a progress bar, a log line)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        record = status.get(job_id) or {}
        on_update(record)
        if record.get("state") in ENDED:
            return record
        if deadline is not None and time.monotonic() > deadline:
            return {"state": "timeout", **record} if "state" not in record else record
        time.sleep(poll_s)
