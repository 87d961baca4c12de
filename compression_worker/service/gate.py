"""The evaluation gate: publish only a model that is at least as good as what its fleet serves (minus a
tolerance), that does not give up on any one class, and that fits the fleet's device class (MAC, size and
latency budgets, edgefer/registry/profile.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from edgefer.labels import CLASSES
from edgefer.registry.profile import FleetProfile


@dataclass(frozen=True)
class GateConfig:
    accuracy_tolerance: float = 0.005  # may be this much below the serving model on the held-back split
    max_recall_drop: float = 0.08  # no class's recall may fall more than this below the serving model's
    budgets: FleetProfile = field(default_factory=FleetProfile)


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    candidate: dict = field(default_factory=dict)
    serving: dict | None = None
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def decide(cfg: GateConfig, candidate: dict, serving: dict | None) -> GateDecision:
    """candidate/serving: accuracy and per-class recall on the same held-back faces; candidate also latency_ms,
    size_bytes and macs. Every reason to refuse is listed, not only the first."""
    reasons = []
    if serving is not None and candidate["accuracy"] < serving["accuracy"] - cfg.accuracy_tolerance:
        reasons.append(
            f"accuracy {100 * candidate['accuracy']:.2f}% is below the serving version {serving['version']} "
            f"({100 * serving['accuracy']:.2f}%) minus {100 * cfg.accuracy_tolerance:.2f} points"
        )
    if serving is not None and "recall" in serving and "recall" in candidate:
        for name, mine, theirs in zip(CLASSES, candidate["recall"], serving["recall"], strict=True):
            if mine < theirs - cfg.max_recall_drop:
                reasons.append(f"recall of {name} {100 * mine:.1f}% fell more than {100 * cfg.max_recall_drop:.0f} "
                               f"points below the serving version's {100 * theirs:.1f}%")
    budgets = cfg.budgets
    if candidate["latency_ms"] > budgets.max_latency_ms:
        reasons.append(f"latency {candidate['latency_ms']:.3f} ms exceeds {budgets.max_latency_ms} ms "
                       f"({budgets.latency_threads} thread(s))")
    if candidate["size_bytes"] > budgets.max_size_bytes:
        reasons.append(f"size {candidate['size_bytes']:,} bytes exceeds {budgets.max_size_bytes:,}")
    if candidate["macs"] > budgets.max_macs:
        reasons.append(f"{candidate['macs']:,} MACs exceed {budgets.max_macs:,}")
    return GateDecision(not reasons, reasons, candidate, serving, asdict(cfg))
