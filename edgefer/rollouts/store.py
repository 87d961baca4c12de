"""A fleet's rollout in Redis: one record (compare-and-set on its revision) and a capped log of decisions.

The record is what a controller that was killed resumes from: the step, the canary nodes, the baselines
of the bake window and when it started. Operator commands (pause, resume, abort) change it the same way.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import ClassVar

import redis

from edgefer.json_record import JsonRecord
from edgefer.registry.keys import FleetKeys
from edgefer.rollouts.spec import RolloutSpec

ACTIVE = ("running", "holding", "paused")  # holding: a node went stale (automatic); paused: needs the operator
FINAL = ("promoted", "rolled_back", "aborted")
LOG_LENGTH = 1000


class RolloutError(ValueError):
    """A rollout request that cannot be done; the message says why."""


@dataclass(frozen=True)
class RolloutRecord(JsonRecord):
    record_name: ClassVar[str] = "rollout record"
    record_error: ClassVar[type[Exception]] = RolloutError

    version: int  # the canary
    stable: int  # what the fleet served when the rollout started (the rollback target)
    spec: dict  # RolloutSpec.to_dict() (a record of an earlier release may hold its flat keys: read with them)
    state: str = "running"
    step: int = 0  # index into the spec's steps
    canary_nodes: list[str] = field(default_factory=list)
    participants: list[str] = field(default_factory=list)  # the live nodes of this step ([]: the step has not started)
    baseline: dict = field(default_factory=dict)  # node id -> its status record when the bake window opened for it
    settle_until: float = 0.0  # no baseline is taken before this (a step's swaps, a resumed node's backlog)
    bake_started: float = 0.0  # 0: the window opens once every participant serves its target
    looks: int = 0  # looks taken at this step (each spends part of the checks' error rates)
    look_faces: int = 0  # the canary's faces at the last look of this window (the next waits for look_growth times)
    failures: dict = field(default_factory=dict)  # metric -> failed looks at this step
    reason: str = ""  # why the rollout is in its state
    last_analysis: dict | None = None
    settled: bool = False  # a finished rollout's outcome was applied to the desired record (never again after)
    source: str = ""  # who started it (an operator, a job)
    created: float = 0.0
    updated: float = 0.0
    revision: int = 0

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def rollout_spec(self) -> RolloutSpec:
        return RolloutSpec.from_dict(self.spec, warn=False)

    def share(self) -> float:
        """The canary share of the current step (of the last one once every step passed)."""
        shares = self.rollout_spec().shares()
        return shares[min(self.step, len(shares) - 1)]


class RolloutStore:
    def __init__(self, client: redis.Redis, keys: FleetKeys) -> None:
        self.client = client
        self.keys = keys

    def get(self) -> RolloutRecord | None:
        return _read(self.client.get(self.keys.rollout))

    def create(self, record: RolloutRecord, force: bool = False) -> RolloutRecord:
        """Store a new rollout unless one is active (a finished one is replaced; with `force`, an unreadable one)."""

        def change(old: RolloutRecord | None) -> RolloutRecord:
            if old is not None and old.active:
                raise RolloutError(f"version {old.version} is being rolled out ({old.state}); abort it first")
            now = time.time()
            return replace(record, created=now, updated=now, revision=(old.revision + 1) if old else 1)

        return self.update(change, replace_unreadable=force)

    def discard_unreadable(self) -> str:
        """Delete a record that cannot be read (the operator's `rollout abort --force`), logging what was
        replaced; returns the reason it could not be read. A readable record is left alone (RolloutError)."""
        problems: list[str] = []

        def decide(raw: bytes | None) -> tuple[None, dict]:
            try:
                _read(raw)
            except RolloutError as exc:
                problems.append(str(exc))
                return None, {"decision": "aborted", "step": 0, "version": None,
                              "reason": f"unreadable rollout record removed by the operator ({exc})"}
            raise RolloutError("the rollout record is readable: abort it without --force")

        self._transact(decide)
        return problems[-1]

    def update(self, change, entry: dict | None = None, replace_unreadable: bool = False) -> RolloutRecord:
        """Read-modify-write under WATCH: a concurrent change makes `change` run again on the new record; `entry`
        goes to the decision log in the same transaction as the record it explains."""

        def decide(raw: bytes | None) -> tuple[RolloutRecord, dict | None]:
            try:
                old = _read(raw)
            except RolloutError:
                if not replace_unreadable:
                    raise
                old = None
            new = change(old)
            if old is not None and new.revision == old.revision:
                new = replace(new, revision=old.revision + 1, updated=time.time())
            return new, entry

        return self._transact(decide)

    def _transact(
        self, decide: Callable[[bytes | None], tuple[RolloutRecord | None, dict | None]]
    ) -> RolloutRecord | None:
        """Under WATCH: `decide` maps the stored bytes to the new record (None: delete it) and a log entry, both
        written in one transaction; run again when the record changed meanwhile."""
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(self.keys.rollout)
                    new, entry = decide(pipe.get(self.keys.rollout))
                    pipe.multi()
                    if new is None:
                        pipe.delete(self.keys.rollout)
                    else:
                        pipe.set(self.keys.rollout, new.to_json())
                    if entry is not None:
                        pipe.lpush(self.keys.rollout_log, json.dumps({"time": time.time(), **entry}, sort_keys=True))
                        pipe.ltrim(self.keys.rollout_log, 0, LOG_LENGTH - 1)
                    pipe.execute()
                    return new
                except redis.WatchError:
                    continue

    def put_if(self, record: RolloutRecord, revision: int, entry: dict | None = None) -> RolloutRecord | None:
        """Store `record` if the stored one still has `revision` (the controller's compare-and-set), with its
        decision log `entry` in the same transaction (a controller killed in between cannot leave a step taken
        but unlogged); the record as stored, or None when it had changed."""
        try:
            return self.update(lambda old: self._expect(old, revision, record), entry)
        except _Conflict:
            return None

    @staticmethod
    def _expect(old: RolloutRecord | None, revision: int, record: RolloutRecord) -> RolloutRecord:
        if old is None or old.revision != revision:
            raise _Conflict
        return replace(record, revision=revision + 1, updated=time.time())

    def decisions(self, count: int = 20) -> list[dict]:
        return [json.loads(raw) for raw in self.client.lrange(self.keys.rollout_log, 0, count - 1)]


class _Conflict(Exception):
    pass


def _read(raw: bytes | None) -> RolloutRecord | None:
    """The stored record, or a RolloutError that says how an operator replaces one that cannot be read."""
    try:
        return RolloutRecord.from_json(raw) if raw is not None else None
    except RolloutError as exc:
        raise RolloutError(f"{exc}; `edgefer-registry rollout abort --force` removes it, "
                           "`rollout start VERSION --force` replaces it") from exc
