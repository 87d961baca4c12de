"""The desired record of a fleet: which version every node should serve, with an optional canary."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields


class DesiredRecordError(ValueError):
    """A desired record that cannot be read; the message says what is wrong with it."""


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
        """Fields a later release adds are ignored (older nodes keep following); a record that is not
        JSON, lacks its version or has a field of the wrong type is a DesiredRecordError."""
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
            known = {f.name for f in fields(cls)} - {"canary"}
            canary_data = data.get("canary")
            canary = None
            if canary_data:
                canary = Canary(**{k: v for k, v in canary_data.items() if k in {f.name for f in fields(Canary)}})
            record = cls(canary=canary, **{k: v for k, v in data.items() if k in known})
            if not isinstance(record.version, int) or isinstance(record.version, bool):
                raise TypeError(f"version {record.version!r} is not a number")
            if canary is not None and not isinstance(canary.version, int):
                raise TypeError(f"canary version {canary.version!r} is not a number")
        except (ValueError, TypeError, AttributeError) as exc:
            raise DesiredRecordError(f"unreadable desired record ({exc})") from exc
        return record
