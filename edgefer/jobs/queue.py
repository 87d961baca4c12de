"""Jobs in a Redis Stream with a consumer group: at-least-once delivery that survives a crashed worker.

A worker first takes back what it had claimed before a crash (its own pending entries), then entries
another worker left idle for longer than `claim_idle_ms`, then new ones. While a job runs, the worker
re-claims its entry now and then, so a long job is never mistaken for an abandoned one. The entry is
acknowledged only when the job has ended (published, rejected or failed).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from edgefer.registry.keys import FleetKeys


@dataclass(frozen=True)
class Delivery:
    entry_id: str
    payload: bytes


class JobQueue:
    def __init__(self, client: redis.Redis, fleet: str = "default", consumer: str = "worker") -> None:
        self.client = client
        self.stream = FleetKeys(fleet).job_stream
        self.group = "compression-workers"
        self.consumer = consumer
        self._group_ready = False
        try:
            self._ensure_group()
        except (redis.ConnectionError, redis.TimeoutError):  # Redis not up yet: `next` makes the group once it is
            pass

    def _ensure_group(self) -> None:
        """The consumer group, made when missing (first use, or a Redis that restarted without its data)."""
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def submit(self, payload: str) -> str:
        return self.client.xadd(self.stream, {"job": payload}).decode()

    def next(self, block_ms: int, claim_idle_ms: int) -> Delivery | None:
        if not self._group_ready:
            self._ensure_group()
        try:
            return self._next(block_ms, claim_idle_ms)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._ensure_group()
            return self._next(block_ms, claim_idle_ms)

    def _next(self, block_ms: int, claim_idle_ms: int) -> Delivery | None:
        own = self.client.xreadgroup(self.group, self.consumer, {self.stream: "0"}, count=1)
        if own and own[0][1]:
            return self._delivery(own[0][1][0])
        _, claimed, _ = self.client.xautoclaim(self.stream, self.group, self.consumer, claim_idle_ms, "0-0", count=1)
        if claimed:
            return self._delivery(claimed[0])
        fresh = self.client.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=1, block=block_ms)
        if fresh and fresh[0][1]:
            return self._delivery(fresh[0][1][0])
        return None

    def keep_alive(self, delivery: Delivery) -> None:
        """Reset the entry's idle time: this worker is still on it."""
        self.client.xclaim(self.stream, self.group, self.consumer, 0, [delivery.entry_id], justid=True)

    def ack(self, delivery: Delivery) -> None:
        self.client.xack(self.stream, self.group, delivery.entry_id)

    def depth(self) -> tuple[int, int]:
        """(waiting, running): entries no worker has read yet, and entries read and not acknowledged."""
        for group in self.client.xinfo_groups(self.stream):
            if group["name"].decode() == self.group:
                return int(group.get("lag") or 0), int(group["pending"])
        return 0, 0

    @staticmethod
    def _delivery(entry: tuple) -> Delivery:
        entry_id, fields = entry
        return Delivery(entry_id.decode(), fields.get(b"job", b""))
