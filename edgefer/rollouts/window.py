"""What canary and stable nodes served in a bake window, from their status records.

Inputs are the nodes' status records (services/edge/field_stats.py: cumulative since a node started); a
window is the difference between the record at the start of the bake and now, for the version the node
serves. A node that restarted in between counts from zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from edgefer.labels import CLASSES
from edgefer.registry.status import NodeStatus


@dataclass
class Window:
    """What a group of nodes served with one version in the bake window."""

    frames: int = 0
    faces: int = 0
    classes: list[int] = field(default_factory=lambda: [0] * len(CLASSES))
    confidence_sum: float = 0.0
    confidence_buckets: dict[str, int] = field(default_factory=dict)  # le -> cumulative count of top-1 confidences
    latency_buckets: dict[str, int] = field(default_factory=dict)  # le (seconds) -> cumulative count of frames
    model_buckets: dict[str, int] = field(default_factory=dict)  # le (seconds) -> cumulative count of model calls
    ok: int = 0
    errors: int = 0
    dropped: int = 0

    def add(self, other: Window) -> None:
        self.frames += other.frames
        self.faces += other.faces
        self.classes = [a + b for a, b in zip(self.classes, other.classes, strict=True)]
        self.confidence_sum += other.confidence_sum
        for mine, theirs in ((self.confidence_buckets, other.confidence_buckets),
                             (self.latency_buckets, other.latency_buckets), (self.model_buckets, other.model_buckets)):
            for le, count in theirs.items():
                mine[le] = mine.get(le, 0) + count
        self.ok += other.ok
        self.errors += other.errors
        self.dropped += other.dropped

    @property
    def mean_confidence(self) -> float:
        return self.confidence_sum / self.faces if self.faces else 0.0

    def distribution(self) -> list[float]:
        total = sum(self.classes)
        return [c / total for c in self.classes] if total else [0.0] * len(self.classes)


def node_window(before: NodeStatus | None, after: NodeStatus, version: str) -> Window:
    """`version`'s traffic on one node between two of its status records."""
    if before is None or before.started != after.started:
        before = NodeStatus(after.node_id, None)
    now, then = after.field_stats.get(version) or {}, before.field_stats.get(version) or {}

    def buckets(histogram: str) -> dict[str, int]:
        earlier = then.get(histogram, {}).get("buckets", {})
        return {le: count - earlier.get(le, 0) for le, count in now.get(histogram, {}).get("buckets", {}).items()}

    zeros = [0] * len(CLASSES)
    window = Window(
        frames=now.get("frames", 0) - then.get("frames", 0),
        faces=now.get("faces", 0) - then.get("faces", 0),
        classes=[a - b for a, b in zip(now.get("classes", zeros), then.get("classes", zeros), strict=True)],
        confidence_sum=now.get("confidence", {}).get("sum", 0.0) - then.get("confidence", {}).get("sum", 0.0),
        confidence_buckets=buckets("confidence"),
        latency_buckets=buckets("latency"),
        model_buckets=buckets("model"),
    )
    for name in ("ok", "errors", "dropped"):
        setattr(window, name, after.traffic.get(name, 0) - before.traffic.get(name, 0))
    return window


def js_divergence(p: list[float], q: list[float]) -> float:
    """Jensen-Shannon divergence in bits: 0 for the same distribution, 1 for disjoint ones."""
    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]

    def kl(x: list[float]) -> float:
        return sum(a * math.log2(a / b) for a, b in zip(x, m, strict=True) if a > 0)

    return 0.5 * kl(p) + 0.5 * kl(q)
