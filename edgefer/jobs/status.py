"""Job status records in Redis: what stage a job is in, how far, the numbers so far, and how it ended."""

from __future__ import annotations

import json
import time

import redis

from edgefer.registry.keys import FleetKeys

ENDED = ("published", "rejected", "failed", "rolled_back")
NOT_RERUN = ("published", "rejected", "rolled_back")  # a redelivered job that ended so is acknowledged, not run again


class JobStatusStore:
    def __init__(self, client: redis.Redis, fleet: str = "default") -> None:
        self.client = client
        self._keys = FleetKeys(fleet)
        self.index = self._keys.jobs

    def key(self, job_id: str) -> str:
        return self._keys.job(job_id)

    def update(self, job_id: str, **fields: object) -> None:
        encoded = {k: json.dumps(v) for k, v in fields.items()}
        encoded["updated"] = json.dumps(time.time())
        with self.client.pipeline(transaction=True) as tx:
            tx.hset(self.key(job_id), mapping=encoded)
            tx.zadd(self.index, {job_id: time.time()}, nx=True)
            tx.execute()

    def get(self, job_id: str) -> dict | None:
        raw = self.client.hgetall(self.key(job_id))
        return {k.decode(): json.loads(v) for k, v in raw.items()} if raw else None

    def recent(self, count: int = 20) -> list[tuple[str, dict]]:
        ids = [i.decode() for i in self.client.zrevrange(self.index, 0, count - 1)]
        return [(i, self.get(i) or {}) for i in ids]

    def finished(self, job_id: str) -> bool:
        status = self.get(job_id)
        return bool(status) and status.get("state") in NOT_RERUN
