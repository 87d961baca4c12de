"""What a rollout asks for: its steps, bake time and the thresholds a canary must stay within.

Every field is a flag of `edgefer-registry rollout start` (generated, edgefer/settings_fields.py) and a key
of a JSON spec file (`--spec`) or of a job's `rollout` setting.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from edgefer.settings_fields import from_json, option


class RolloutSpecError(ValueError):
    """A spec that cannot run; the message names the field."""


def parse_duration(text: str | float) -> float:
    """Seconds from 90, "90", "90s", "2m" or "1h"."""
    if isinstance(text, (int, float)):
        return float(text)
    units = {"s": 1, "m": 60, "h": 3600}
    raw = text.strip().lower()
    try:
        return float(raw[:-1]) * units[raw[-1]] if raw and raw[-1] in units else float(raw)
    except ValueError as exc:
        raise RolloutSpecError(f"cannot read {text!r} as a duration (90, 90s, 2m, 1h)") from exc


@dataclass(frozen=True)
class RolloutSpec:
    steps: str = option("5,25,50,100", doc="canary shares of the live nodes in percent, the last 100 (promote)")
    bake: str = "2m"  # how long canary and stable nodes serve side by side before each step is judged
    settle: str = "5s"  # after a step starts or a held rollout resumes: swaps and backlogs settle before the window
    min_faces: int = 200  # faces each side must have classified in the window before it is judged (p99 needs them)
    max_divergence: float = 0.1  # Jensen-Shannon divergence (base 2) of the predicted-class distributions
    max_confidence_drop: float = 0.1  # the canary's mean top-1 confidence may be this much below the stable one's
    max_latency_ratio: float = 1.5  # canary p99 latency may be at most this times the stable p99 ...
    latency_slack_ms: float = 2.0  # ... plus this (small latencies are noisy)
    max_error_rate_increase: float = 0.01  # errors per request above the stable nodes'
    max_dropped_rate_increase: float = 0.05  # dropped stream frames per frame above the stable nodes'
    max_wait_bakes: int = 3  # with too little traffic after this many bake windows: pause for the operator

    def __post_init__(self) -> None:
        shares = self.shares()
        if not shares or shares[-1] != 100 or any(not 0 < s <= 100 for s in shares) or shares != sorted(set(shares)):
            raise RolloutSpecError(f"steps must be increasing shares in (0, 100] ending at 100, not {self.steps!r}")
        if self.bake_s() < 0 or self.settle_s() < 0 or self.min_faces < 1 or self.max_wait_bakes < 1:
            raise RolloutSpecError("bake and settle must be >= 0, min_faces and max_wait_bakes >= 1")

    def shares(self) -> list[float]:
        try:
            return [float(s) for s in str(self.steps).split(",") if s.strip()]
        except ValueError as exc:
            raise RolloutSpecError(f"steps must be comma-separated numbers, not {self.steps!r}") from exc

    def bake_s(self) -> float:
        return parse_duration(self.bake)

    def settle_s(self) -> float:
        return parse_duration(self.settle)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> RolloutSpec:
        """From JSON, where steps may also be a list of numbers and durations plain seconds."""
        if isinstance(data, dict):
            data = {k: ",".join(map(str, v)) if k == "steps" and isinstance(v, list)
                    else str(v) if k in ("bake", "settle") and isinstance(v, (int, float)) else v
                    for k, v in data.items()}
        try:
            return from_json(cls, data, "rollout spec")
        except RolloutSpecError:
            raise
        except (TypeError, ValueError) as exc:
            raise RolloutSpecError(str(exc)) from exc

    @classmethod
    def from_file(cls, path: Path) -> RolloutSpec:
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except OSError as exc:
            raise RolloutSpecError(f"{path}: cannot read rollout spec ({exc.strerror})") from exc
        except ValueError as exc:
            raise RolloutSpecError(f"{path}: {exc}") from exc
