"""What a rollout asks for, as data: a list of canary steps (share, longest bake, optional pause for the operator)
and a list of checks (metric, effect floor, confidence, failure limit), as argo-rollouts keeps `CanaryStep` and
`Metric`. `edgefer/rollouts/analysis.py` evaluates whatever checks a spec lists.

JSON (`edgefer-registry rollout start --spec`, a job's `rollout` setting):
    {"steps": [{"share": 10, "bake": "2m"}, {"share": 50, "pause": true}, {"share": 100}],
     "checks": [{"metric": "latency_p90", "effect": 0.2}, {"metric": "class_mix", "effect": 0.1}],
     "settle": "5s", "min_faces": 100}
Shorthands: steps as numbers (`[10, 50, 100]` or `"10,50,100"`) with a top-level `bake` for all of them. The
flat threshold keys of earlier releases (`max_divergence`, `max_latency_ratio`, ...) are still read, with a
warning naming the check they now set.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from edgefer.settings_fields import from_json, option

log = logging.getLogger("edgefer.rollouts")

# Each metric's effect is "how much worse the canary is", in its own unit (edgefer/rollouts/statistics.py).
METRICS = {
    "model_p50": "relative increase of the median onnxruntime time per face (the model's own speed)",
    "model_p90": "relative increase of the 90th percentile onnxruntime time per face",
    "latency_p50": "relative increase of the median time per frame (0.2 = 20% slower)",
    "latency_p90": "relative increase of the 90th percentile time per frame",
    "latency_p99": "relative increase of the 99th percentile time per frame (needs thousands of frames)",
    "class_mix": "Jensen-Shannon divergence of the predicted-class distributions, in bits (0 same, 1 disjoint)",
    "confidence": "drop of the mean top-1 confidence",
    "error_rate": "increase of refused requests or frames per request",
    "dropped_rate": "increase of dropped stream frames per frame",
}
ON_INCONCLUSIVE = ("pause", "rollback")


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
class CanaryStep:
    share: float  # percent of the live nodes that serve the canary in this step; the last step is 100 (promote)
    bake: str = "5m"  # the longest this step bakes: it is judged as soon as every check is decided
    pause: bool = False  # after this step passes, wait for `edgefer-registry rollout resume`

    def __post_init__(self) -> None:
        if not 0 < self.share <= 100:
            raise RolloutSpecError(f"a step's share must be in (0, 100], not {self.share:g}")
        if self.bake_s() < 0:
            raise RolloutSpecError(f"a step's bake must be >= 0, not {self.bake!r}")

    def bake_s(self) -> float:
        return parse_duration(self.bake)


@dataclass(frozen=True)
class MetricCheck:
    metric: str = option(choices=tuple(METRICS), doc="what is compared (METRICS names each one's unit)")
    effect: float = 0.1  # the effect floor: the smallest regression that matters, in the metric's unit
    confidence: float = 0.95  # how sure a decision must be, over every look of a step together
    failure_limit: int = 0  # failed looks a step tolerates before it rolls back

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise RolloutSpecError(f"unknown check metric {self.metric!r}; use one of {', '.join(METRICS)}")
        if self.effect <= 0:
            raise RolloutSpecError(f"check {self.metric}: effect must be > 0 (the smallest regression that matters)")
        if not 0.5 <= self.confidence < 1:
            raise RolloutSpecError(f"check {self.metric}: confidence must be in [0.5, 1), not {self.confidence:g}")
        if self.failure_limit < 0:
            raise RolloutSpecError(f"check {self.metric}: failure_limit must be >= 0")

    @property
    def alpha(self) -> float:
        return 1 - self.confidence


DEFAULT_STEPS = tuple(CanaryStep(share) for share in (5, 25, 50, 100))
DEFAULT_CHECKS = (
    MetricCheck("model_p50", 0.2),  # the model's own time per face: 20% slower is a regression
    MetricCheck("latency_p90", 0.5),  # what clients wait for, tail included: a board's own scheduling moves it
    # by 20% between boards serving the same model (docs/BENCHMARKS.md §11), so its floor is wider
    MetricCheck("class_mix", 0.1),
    MetricCheck("confidence", 0.1),
    MetricCheck("error_rate", 0.02),  # showing "under 2 points more" takes ~500 faces without errors
    MetricCheck("dropped_rate", 0.05),
)
# The flat thresholds of earlier releases and the check each now sets (the rate ones keep their meaning).
LEGACY_KEYS = {
    "max_divergence": ("class_mix",),
    "max_confidence_drop": ("confidence",),
    "max_latency_ratio": ("latency_p90",),  # a ratio: the effect is ratio - 1
    "max_error_rate_increase": ("error_rate",),
    "max_dropped_rate_increase": ("dropped_rate",),
}
IGNORED_KEYS = {
    "latency_slack_ms": "the latency checks' confidence bounds take the place of a fixed slack",
    "max_wait_bakes": "each step's bake is now its longest, and an inconclusive step does what on_inconclusive says",
}


@dataclass(frozen=True)
class RolloutSpec:
    steps: tuple[CanaryStep, ...] = DEFAULT_STEPS
    checks: tuple[MetricCheck, ...] = DEFAULT_CHECKS
    settle: str = "5s"  # after a step starts or a held rollout resumes: swaps and backlogs settle before the window
    min_faces: int = 100  # the floor: no look before each side has classified this many faces in the window
    look_growth: float = 1.5  # the next look once the canary's faces have grown by this factor (or the bake ends)
    on_inconclusive: str = option("pause", choices=ON_INCONCLUSIVE,
                                  doc="a step still undecided at the end of its bake: pause for the operator or roll back")

    def __post_init__(self) -> None:
        shares = self.shares()
        if not shares or shares[-1] != 100 or shares != sorted(set(shares)):
            raise RolloutSpecError(f"steps must be increasing shares in (0, 100] ending at 100, not {shares}")
        if self.settle_s() < 0 or self.min_faces < 1 or self.look_growth <= 1:
            raise RolloutSpecError("settle must be >= 0, min_faces >= 1 and look_growth > 1")
        if not self.checks:
            raise RolloutSpecError("a rollout needs at least one check")
        metrics = [c.metric for c in self.checks]
        if len(set(metrics)) != len(metrics):
            raise RolloutSpecError(f"each metric may be checked once, not {metrics}")
        if self.on_inconclusive not in ON_INCONCLUSIVE:
            raise RolloutSpecError(f"on_inconclusive must be {' or '.join(ON_INCONCLUSIVE)}")

    def shares(self) -> list[float]:
        return [step.share for step in self.steps]

    def settle_s(self) -> float:
        return parse_duration(self.settle)

    def longest_s(self) -> float:
        """Every step settled and baked to its end: the longest a rollout can run without an operator."""
        return sum(self.settle_s() + step.bake_s() for step in self.steps)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object, warn: bool = True) -> RolloutSpec:
        """From JSON (nested as the dataclasses, or with the shorthands and flat keys of earlier releases)."""
        if not isinstance(data, dict):
            raise RolloutSpecError("rollout spec must be a JSON object")
        data = _expand(dict(data), warn)
        try:
            steps = tuple(from_json(CanaryStep, s, "rollout step") for s in data.pop("steps", [])) or None
            checks = tuple(from_json(MetricCheck, c, "rollout check") for c in data.pop("checks", [])) or None
            spec = from_json(cls, data, "rollout spec")
        except RolloutSpecError:
            raise
        except (TypeError, ValueError) as exc:
            raise RolloutSpecError(str(exc)) from exc
        return replace(spec, steps=steps or spec.steps, checks=checks or spec.checks)

    @classmethod
    def from_file(cls, path: Path) -> RolloutSpec:
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except OSError as exc:
            raise RolloutSpecError(f"{path}: cannot read rollout spec ({exc.strerror})") from exc
        except ValueError as exc:
            raise RolloutSpecError(f"{path}: {exc}") from exc


def parse_steps(text: str | list | tuple, bake: str | None = None) -> list[dict]:
    """Steps as JSON objects from "10,50,100", "10:2m,50:5m:pause,100" or a list of numbers or objects; `bake`
    for the steps that do not give their own."""
    items: list[Any] = list(text) if isinstance(text, (list, tuple)) else [s.strip() for s in str(text).split(",") if s.strip()]
    steps = []
    for item in items:
        if isinstance(item, dict):
            steps.append({"bake": bake, **item} if bake is not None else item)
            continue
        if isinstance(item, bool) or not isinstance(item, (int, float, str)):
            raise RolloutSpecError(f"a step is a share, SHARE[:BAKE][:pause] or an object, not {item!r}")
        share, *rest = str(item).split(":")
        step: dict[str, Any] = {"share": _number(share, "step share")}
        for part in rest:
            if part == "pause":
                step["pause"] = True
            else:
                step["bake"] = part
        if bake is not None:
            step.setdefault("bake", bake)
        steps.append(step)
    return steps


def parse_check(text: str) -> dict:
    """A check from METRIC=EFFECT[@CONFIDENCE] (`latency_p90=0.3`, `class_mix=0.05@0.99`)."""
    metric, sep, rest = text.partition("=")
    if not sep:
        raise RolloutSpecError(f"a check is METRIC=EFFECT[@CONFIDENCE], not {text!r}")
    effect, _, confidence = rest.partition("@")
    check = {"metric": metric.strip(), "effect": _number(effect, f"check {metric} effect")}
    if confidence:
        check["confidence"] = _number(confidence, f"check {metric} confidence")
    return check


def merge_checks(base: list[dict], given: list[dict]) -> list[dict]:
    """`base` with each check of `given` replacing the one of the same metric (or added)."""
    merged = {c["metric"]: c for c in base}
    merged.update({c["metric"]: {**merged.get(c["metric"], {}), **c} for c in given})
    return list(merged.values())


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError as exc:
        raise RolloutSpecError(f"{what} must be a number, not {text!r}") from exc


def _expand(data: dict[str, Any], warn: bool) -> dict[str, Any]:
    """Shorthands and flat keys of earlier releases as steps and checks."""
    bake = data.pop("bake", None)
    if isinstance(bake, (int, float)) and not isinstance(bake, bool):
        bake = str(bake)
    if "steps" in data or bake is not None:
        data["steps"] = parse_steps(data.get("steps", [s.share for s in DEFAULT_STEPS]), bake)
    for step in data.get("steps", []):
        if isinstance(step, dict) and isinstance(step.get("bake"), (int, float)) and not isinstance(step["bake"], bool):
            step["bake"] = str(step["bake"])
    legacy = tuple(key for key in (*LEGACY_KEYS, *IGNORED_KEYS) if key in data)
    if not legacy:
        return data
    checks = data.get("checks") or [asdict(c) for c in DEFAULT_CHECKS]
    updates = []
    for key in legacy:
        value = data.pop(key)
        if key in IGNORED_KEYS:
            if warn:
                log.warning("rollout setting %s is no longer used: %s", key, IGNORED_KEYS[key])
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RolloutSpecError(f"rollout setting {key}: {value!r} is not a number")
        effect = value - 1 if key == "max_latency_ratio" else value
        updates += [{"metric": metric, "effect": effect} for metric in LEGACY_KEYS[key]]
        if warn:
            log.warning("rollout setting %s is now the effect of check(s) %s (read until the next release)",
                        key, ", ".join(LEGACY_KEYS[key]))
    data["checks"] = merge_checks(checks, updates)
    return data
