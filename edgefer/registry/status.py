"""Per-node status records and the fleet view built from them (who serves what, who is stale).

Status records are advisory: any Redis writer can write one. The fleet view never trusts a record
further than its own claim (it says "converged" only when the served sha256 is the target's), and a
record it cannot read is shown as such.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from edgefer.json_record import JsonRecord
from edgefer.registry.desired import DesiredRecord
from edgefer.registry.version import VersionLabel, is_version

# A fleet's status writes per second that one Redis is asked to absorb: heartbeats stretch past it.
STATUS_WRITES_PER_S = 200.0


def heartbeat_interval(base_s: float, fleet_size: int) -> float:
    """A node's heartbeat period: its own setting, stretched so that the whole fleet writes at most
    STATUS_WRITES_PER_S status records a second (5 s up to 1,000 nodes, 50 s at 10,000)."""
    return max(base_s, fleet_size / STATUS_WRITES_PER_S)


def announce_spread(fleet_size: int, per_thousand_s: float, cap_s: float) -> float:
    """The window over which a fleet's nodes spread their fetches after an announcement, so one
    single-threaded Redis is not asked for the blob by every node in the same millisecond."""
    return min(cap_s, per_thousand_s * fleet_size / 1000)


class NodeStatusError(ValueError):
    """A node status record that cannot be read; the message says why."""


@dataclass(frozen=True)
class NodeStatus(JsonRecord):
    """What a node writes about itself; fields a later release adds are ignored, a record that is not a JSON
    object with a node id is refused."""

    record_name: ClassVar[str] = "status record"
    record_error: ClassVar[type[Exception]] = NodeStatusError

    node_id: str
    version: VersionLabel | None  # the version being served (a registry version's label, or a bootstrap file's name)
    sha256: str = ""
    epoch: str = ""  # the registry epoch of the served version ("" for a bootstrap file)
    last_error: str = ""
    error_version: int | None = None  # the version the last error was about
    local_error: str = ""  # the node's own fault, not a version's (e.g. its model cache cannot be written)
    heartbeat: float = 0.0  # unix time the node wrote this, by its own clock (shown; liveness uses the server's)
    started: float = 0.0
    field_stats: dict = field(default_factory=dict)  # per served version since `started`: classes, confidence, latency
    traffic: dict = field(default_factory=dict)  # frames ok / invalid / dropped and errors since `started`

    def check(self) -> None:
        if not isinstance(self.node_id, str) or not isinstance(self.heartbeat, (int, float)):
            raise TypeError("node_id or heartbeat of the wrong type")


@dataclass(frozen=True)
class NodeRow:
    node_id: str
    status: NodeStatus | None  # None once the record's TTL ran out
    last_seen: float  # the server's time of the node's last status write
    target: int | None
    target_sha256: str  # "" when the target's manifest is not in the registry
    stale: bool
    unreadable: str = ""  # why the status record could not be read

    @property
    def clock_skew_s(self) -> float | None:
        """How far the board's clock is ahead (+) or behind (-) the server's, as of its last status write."""
        return self.status.heartbeat - self.last_seen if self.status is not None and self.status.heartbeat else None

    @property
    def converged(self) -> bool:
        """Serving the target's number and its bytes: a number alone can name other bytes after data loss."""
        return (self.status is not None and is_version(self.status.version, self.target)
                and bool(self.target_sha256) and self.status.sha256 == self.target_sha256)

    @property
    def state(self) -> str:
        if self.unreadable:
            return "unreadable"
        if self.stale:
            return "stale"
        if self.converged:
            return "ok"
        if self.status is not None and is_version(self.status.version, self.target):
            return "mismatch"  # the target's number with other bytes: a stale cache or a false record
        return "syncing"


def fleet_rows(
    seen: dict[str, float],
    statuses: dict[str, NodeStatus | None],
    unreadable: dict[str, str],
    desired: DesiredRecord | None,
    target_sha256: dict[int, str],
    stale_after_s: float,
    now: float,
) -> list[NodeRow]:
    """Liveness is the server's time since a node's last status write (`seen`, `now`: Redis's clock), so a
    board with a wrong clock is judged like any other. An unreadable record counts as live and not converged;
    an expired one as stale. A large fleet's nodes heartbeat less often (heartbeat_interval), so staleness
    waits three of their periods."""
    stale_after_s = max(stale_after_s, 3 * heartbeat_interval(0.0, len(seen)))
    rows = []
    for node_id, last_seen in sorted(seen.items()):
        status = statuses.get(node_id)
        stale = (status is None and node_id not in unreadable) or now - last_seen > stale_after_s
        target = desired.target_for(node_id) if desired else None
        sha = target_sha256.get(target, "") if target is not None else ""
        rows.append(NodeRow(node_id, status, last_seen, target, sha, stale, unreadable.get(node_id, "")))
    return rows


def fleet_converged(rows: list[NodeRow]) -> bool:
    """Every live node serves its target (stale nodes catch up when they return; they do not block)."""
    live = [r for r in rows if not r.stale]
    return bool(live) and all(r.converged for r in live)
