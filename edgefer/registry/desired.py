"""The desired record of a fleet: which version every node should serve, with an optional canary."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field


def node_bucket(node_id: str) -> float:
    """A stable place in [0, 100) per node id, so a 10% canary is always the same nodes."""
    return int(hashlib.sha256(node_id.encode()).hexdigest()[:8], 16) % 10_000 / 100


@dataclass(frozen=True)
class Canary:
    version: int
    nodes: list[str] = field(default_factory=list)
    percent: float = 0.0

    def includes(self, node_id: str) -> bool:
        return node_id in self.nodes or node_bucket(node_id) < self.percent


@dataclass(frozen=True)
class DesiredRecord:
    version: int
    canary: Canary | None = None
    previous: int | None = None  # what `rollback` without a version returns to
    revision: int = 0
    updated: str = ""

    def target_for(self, node_id: str) -> int:
        if self.canary is not None and self.canary.includes(node_id):
            return self.canary.version
        return self.version

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> DesiredRecord:
        data = json.loads(raw)
        canary = Canary(**data.pop("canary")) if data.get("canary") else None
        data.pop("canary", None)
        return cls(canary=canary, **data)
