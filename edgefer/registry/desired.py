"""The desired record of a fleet: which version every node should serve, with an optional canary."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

from edgefer.json_record import JsonRecord, known_fields


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
class DesiredRecord(JsonRecord):
    """What a fleet should serve. Fields a later release adds are ignored (older nodes keep following); a record
    that is not JSON, lacks its version or has a field of the wrong type is a DesiredRecordError."""

    record_name: ClassVar[str] = "desired record"
    record_error: ClassVar[type[Exception]] = DesiredRecordError

    version: int
    canary: Canary | None = None
    previous: int | None = None  # what `rollback` without a version returns to
    revision: int = 0
    updated: str = ""

    def target_for(self, node_id: str) -> int:
        if self.canary is not None and self.canary.includes(node_id):
            return self.canary.version
        return self.version

    @classmethod
    def build(cls, data: dict[str, Any]) -> DesiredRecord:
        canary = Canary(**known_fields(Canary, data["canary"])) if data.get("canary") else None
        return cls(**{**known_fields(cls, data), "canary": canary})

    def check(self) -> None:
        if not isinstance(self.version, int) or isinstance(self.version, bool):
            raise TypeError(f"version {self.version!r} is not a number")
        if self.canary is not None and not isinstance(self.canary.version, int):
            raise TypeError(f"canary version {self.canary.version!r} is not a number")
