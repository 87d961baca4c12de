"""Per-node status records and the fleet view built from them (who serves what, who is stale)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from edgefer.registry.desired import DesiredRecord


@dataclass(frozen=True)
class NodeStatus:
    node_id: str
    version: str | None  # the version being served (a registry version number, or a bootstrap file's name)
    sha256: str = ""
    last_error: str = ""
    error_version: int | None = None  # the version the last error was about
    heartbeat: float = 0.0  # unix time the node wrote this
    started: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> NodeStatus:
        return cls(**json.loads(raw))


@dataclass(frozen=True)
class NodeRow:
    node_id: str
    status: NodeStatus | None  # None once the record's TTL ran out
    last_seen: float
    target: int | None
    stale: bool

    @property
    def converged(self) -> bool:
        return self.status is not None and self.target is not None and self.status.version == str(self.target)


def fleet_rows(
    seen: dict[str, float], statuses: dict[str, NodeStatus | None], desired: DesiredRecord | None, stale_after_s: float
) -> list[NodeRow]:
    now = time.time()
    rows = []
    for node_id, last_seen in sorted(seen.items()):
        status = statuses.get(node_id)
        stale = status is None or now - status.heartbeat > stale_after_s
        target = desired.target_for(node_id) if desired else None
        rows.append(NodeRow(node_id, status, last_seen, target, stale))
    return rows


def fleet_converged(rows: list[NodeRow]) -> bool:
    """Every live node serves its target (stale nodes catch up when they return; they do not block)."""
    live = [r for r in rows if not r.stale]
    return bool(live) and all(r.converged for r in live)
