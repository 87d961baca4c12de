"""The evaluation gate: publish only a model that is at least as good as what the fleet serves (minus a
tolerance) and fits the latency, size and multiply-add budgets of an edge node."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class GateConfig:
    accuracy_tolerance: float = 0.005  # may be this much below the serving model on the held-back split
    max_latency_ms: float = 2.0  # batch 1, one thread, median
    max_size_bytes: int = 2_000_000
    max_macs: int = 25_000_000


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
    """candidate/serving: accuracy on the same held-back faces; candidate also latency_ms, size_bytes, macs."""
    reasons = []
    if serving is not None and candidate["accuracy"] < serving["accuracy"] - cfg.accuracy_tolerance:
        reasons.append(
            f"accuracy {100 * candidate['accuracy']:.2f}% is below the serving version {serving['version']} "
            f"({100 * serving['accuracy']:.2f}%) minus {100 * cfg.accuracy_tolerance:.2f} points"
        )
    if candidate["latency_ms"] > cfg.max_latency_ms:
        reasons.append(f"latency {candidate['latency_ms']:.3f} ms exceeds {cfg.max_latency_ms} ms")
    if candidate["size_bytes"] > cfg.max_size_bytes:
        reasons.append(f"size {candidate['size_bytes']:,} bytes exceeds {cfg.max_size_bytes:,}")
    if candidate["macs"] > cfg.max_macs:
        reasons.append(f"{candidate['macs']:,} MACs exceed {cfg.max_macs:,}")
    return GateDecision(not reasons, reasons, candidate, serving, asdict(cfg))
