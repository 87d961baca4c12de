"""Redis key names of one fleet, in one place so that writers and readers cannot drift apart."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FleetKeys:
    fleet: str = "default"
    prefix: str = "edgefer"

    @property
    def _base(self) -> str:
        return f"{self.prefix}:{self.fleet}"

    @property
    def epoch(self) -> str:
        """A random id made with the registry's first version: Redis that lost its data gets a new one."""
        return f"{self._base}:epoch"

    @property
    def version_counter(self) -> str:
        return f"{self._base}:version-counter"

    @property
    def versions(self) -> str:
        """Sorted set: version -> created unix time."""
        return f"{self._base}:versions"

    def manifest(self, version: int) -> str:
        return f"{self._base}:model:{version}:manifest"

    def published_by(self, key: str) -> str:
        """The version a job (idempotency key) published, so a redelivered job publishes once."""
        return f"{self._base}:published-by:{key}"

    def blob(self, version: int) -> str:
        return f"{self._base}:model:{version}:onnx"

    @property
    def desired(self) -> str:
        return f"{self._base}:desired"

    @property
    def profile(self) -> str:
        """The fleet's device class: the MAC, size and latency budgets of its models (edgefer/registry/profile.py)."""
        return f"{self._base}:profile"

    @property
    def rollout(self) -> str:
        """The fleet's current (or last) rollout: JSON record (edgefer/rollouts/store.py)."""
        return f"{self._base}:rollout"

    @property
    def rollout_log(self) -> str:
        """List, newest first: every rollout decision with its numbers (capped)."""
        return f"{self._base}:rollout-log"

    @property
    def channel(self) -> str:
        return f"{self._base}:announce"

    @property
    def nodes(self) -> str:
        """Sorted set: node id -> last heartbeat unix time (outlives the expiring status records)."""
        return f"{self._base}:nodes"

    def node_status(self, node_id: str) -> str:
        return f"{self._base}:node:{node_id}"

    # -- compression jobs (edgefer/jobs) ----------------------------------------------------------

    @property
    def job_stream(self) -> str:
        """Redis Stream of submitted jobs, read by the workers' consumer group."""
        return f"{self._base}:job-stream"

    def job(self, job_id: str) -> str:
        """Hash: a job's status fields (state, stage, progress, results)."""
        return f"{self._base}:job:{job_id}"

    @property
    def jobs(self) -> str:
        """Sorted set: job id -> first seen unix time (the `edgefer-jobs list` index)."""
        return f"{self._base}:jobs"

    @property
    def lineage(self) -> str:
        """Hash: artefact sha256 -> its record (edgefer/jobs/lineage.py). Shared by every fleet of this Redis:
        a teacher trained for one fleet's data teaches for all of them."""
        return f"{self.prefix}:lineage"
