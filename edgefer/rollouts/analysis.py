"""Canary analysis without labels: canary and stable nodes compared over the same bake window on what they
can see, the distribution of their own predictions and confidences, and latency, errors and dropped frames.

Inputs are the nodes' status records (services/edge/field_stats.py: cumulative since a node started); a
window is the difference between the record at the start of the bake and now, for the version the node
serves. A node that restarted in between counts from zero.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from edgefer.labels import CLASSES
from edgefer.registry.status import NodeStatus
from edgefer.rollouts.spec import RolloutSpec

TAIL_FRAMES = 3


@dataclass
class Window:
    """What a group of nodes served with one version in the bake window."""

    frames: int = 0
    faces: int = 0
    classes: list[int] = field(default_factory=lambda: [0] * len(CLASSES))
    confidence_sum: float = 0.0
    latency_buckets: dict[str, int] = field(default_factory=dict)  # le (seconds) -> cumulative count
    ok: int = 0
    errors: int = 0
    dropped: int = 0

    def add(self, other: Window) -> None:
        self.frames += other.frames
        self.faces += other.faces
        self.classes = [a + b for a, b in zip(self.classes, other.classes, strict=True)]
        self.confidence_sum += other.confidence_sum
        for le, count in other.latency_buckets.items():
            self.latency_buckets[le] = self.latency_buckets.get(le, 0) + count
        self.ok += other.ok
        self.errors += other.errors
        self.dropped += other.dropped

    @property
    def mean_confidence(self) -> float:
        return self.confidence_sum / self.faces if self.faces else 0.0

    @property
    def p99_ms(self) -> float:
        """p99, or in a window of fewer than 300 frames the highest quantile three frames still support (one slow
        frame among fifty is noise, not a regression)."""
        frames = max(self.latency_buckets.values(), default=0)
        return 1e3 * quantile(self.latency_buckets, min(0.99, 1 - TAIL_FRAMES / frames) if frames else 0.99)

    @property
    def error_rate(self) -> float:
        return self.errors / max(1, self.ok + self.errors)

    @property
    def dropped_rate(self) -> float:
        return self.dropped / max(1, self.ok + self.dropped)

    def distribution(self) -> list[float]:
        total = sum(self.classes)
        return [c / total for c in self.classes] if total else [0.0] * len(self.classes)


def node_window(before: NodeStatus | None, after: NodeStatus, version: str) -> Window:
    """`version`'s traffic on one node between two of its status records."""
    if before is None or before.started != after.started:
        before = NodeStatus(after.node_id, None)
    now, then = after.field_stats.get(version) or {}, before.field_stats.get(version) or {}
    window = Window(
        frames=now.get("frames", 0) - then.get("frames", 0),
        faces=now.get("faces", 0) - then.get("faces", 0),
        classes=[
            a - b
            for a, b in zip(
                now.get("classes", [0] * len(CLASSES)), then.get("classes", [0] * len(CLASSES)), strict=True
            )
        ],
        confidence_sum=now.get("confidence", {}).get("sum", 0.0) - then.get("confidence", {}).get("sum", 0.0),
        latency_buckets={
            le: count - then.get("latency", {}).get("buckets", {}).get(le, 0)
            for le, count in now.get("latency", {}).get("buckets", {}).items()
        },
    )
    for name in ("ok", "errors", "dropped"):
        setattr(window, name, after.traffic.get(name, 0) - before.traffic.get(name, 0))
    return window


def quantile(buckets: dict[str, int], q: float) -> float:
    """The q-quantile of a cumulative histogram (seconds), interpolated linearly inside its bucket as
    Prometheus's histogram_quantile does; the largest finite bound when it falls in +Inf; 0 when empty."""
    ordered = sorted((float(le), count) for le, count in buckets.items())
    if not ordered or ordered[-1][1] == 0:
        return 0.0
    target = q * ordered[-1][1]
    lower, below = 0.0, 0
    for le, count in ordered:
        if count >= target:
            if not math.isfinite(le):
                return lower
            return lower + (le - lower) * (target - below) / max(1, count - below)
        lower, below = le, count
    return lower


def js_divergence(p: list[float], q: list[float]) -> float:
    """Jensen-Shannon divergence in bits: 0 for the same distribution, 1 for disjoint ones."""
    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]

    def kl(x: list[float]) -> float:
        return sum(a * math.log2(a / b) for a, b in zip(x, m, strict=True) if a > 0)

    return 0.5 * kl(p) + 0.5 * kl(q)


@dataclass
class Check:
    """One metric of the canary against its limit: at most `limit`, or at least it when `floor`."""

    metric: str
    canary: float
    stable: float
    limit: float
    floor: bool = False
    passed: bool = field(init=False)

    def __post_init__(self) -> None:
        self.passed = self.canary >= self.limit if self.floor else self.canary <= self.limit

    def describe(self) -> str:
        return f"{self.metric} {self.canary:.4g} vs stable {self.stable:.4g} (limit {self.limit:.4g})"


@dataclass
class Analysis:
    verdict: str  # pass | fail | wait
    reason: str
    checks: list[Check]
    canary: dict
    stable: dict

    def to_dict(self) -> dict:
        return asdict(self)


def analyse(spec: RolloutSpec, canary: Window, stable: Window) -> Analysis:
    summary = {
        side: {
            "faces": w.faces,
            "frames": w.frames,
            "distribution": [round(x, 4) for x in w.distribution()],
            "mean_confidence": round(w.mean_confidence, 4),
            "p99_ms": w.p99_ms,
            "error_rate": round(w.error_rate, 5),
            "dropped_rate": round(w.dropped_rate, 5),
        }
        for side, w in (("canary", canary), ("stable", stable))
    }
    if min(canary.faces, stable.faces) < spec.min_faces:
        return Analysis(
            "wait",
            f"too few faces to judge (canary {canary.faces}, stable {stable.faces}; {spec.min_faces} each needed)",
            [],
            *summary.values(),
        )
    divergence = js_divergence(canary.distribution(), stable.distribution())
    latency_limit = stable.p99_ms * spec.max_latency_ratio + spec.latency_slack_ms
    checks = [
        Check("class divergence (JS, bits)", divergence, 0.0, spec.max_divergence),
        Check("mean confidence", canary.mean_confidence, stable.mean_confidence,
              stable.mean_confidence - spec.max_confidence_drop, floor=True),
        Check("p99 latency ms", canary.p99_ms, stable.p99_ms, latency_limit),
        Check("error rate", canary.error_rate, stable.error_rate, stable.error_rate + spec.max_error_rate_increase),
        Check("dropped-frame rate", canary.dropped_rate, stable.dropped_rate,
              stable.dropped_rate + spec.max_dropped_rate_increase),
    ]
    failed = [c for c in checks if not c.passed]
    if failed:
        return Analysis("fail", "; ".join(c.describe() for c in failed), checks, *summary.values())
    return Analysis("pass", "every check within its limit", checks, *summary.values())
