"""What canary analysis decided, as stored in the rollout record and its decision log and shown by
`edgefer-registry rollout status`. Free of the statistics (scipy), so the edge image's CLI can show it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

RELATIVE = ("model_p", "latency_p")  # metric name prefixes of the time percentiles: relative changes, shown in %


@dataclass
class CheckResult:
    metric: str
    verdict: str  # pass | fail | inconclusive
    floor: float  # the check's effect floor
    confidence: float
    alpha: float  # what this look spent
    comparison: dict
    wants_faces: int | None = None  # inconclusive: about how many canary faces would decide it

    def describe(self) -> str:
        c = self.comparison
        text = (f"{self.metric} {_effect(self.metric, c['effect'])} (bounds {_effect(self.metric, c['lower'])} .. "
                f"{_effect(self.metric, c['upper'])}, floor {_effect(self.metric, self.floor)}; {c['test']} "
                f"p={_p(c['p_value'])}, faces {c['n_canary']} vs {c['n_stable']})")
        if self.verdict == "inconclusive":
            text += f", wants ~{self.wants_faces:,} canary faces" if self.wants_faces else ", undecidable at its floor"
        return text


@dataclass
class Analysis:
    verdict: str  # pass | fail | inconclusive | wait (too few faces for a look)
    reason: str
    look: int
    checks: list[CheckResult]
    canary: dict
    stable: dict
    failures: dict[str, int] = field(default_factory=dict)  # failed looks per metric in this step so far

    def to_dict(self) -> dict:
        return asdict(self)


def check_lines(analysis: dict) -> list[str]:
    """One line per check of a stored analysis (a record of an earlier release kept limits, not bounds)."""
    lines = []
    for check in analysis.get("checks", []):
        if "comparison" in check:
            mark = {"pass": "ok  ", "fail": "FAIL"}.get(check["verdict"], "??  ")
            fields_ = {k: v for k, v in check.items() if k in CheckResult.__dataclass_fields__}
            lines.append(f"{mark} {CheckResult(**fields_).describe()}")
        else:
            lines.append(f"{'ok  ' if check.get('passed') else 'FAIL'} {check.get('metric')}: canary "
                         f"{check.get('canary')}, stable {check.get('stable')}, limit {check.get('limit')}")
    return lines


def _effect(metric: str, value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "?"
    if metric.startswith(RELATIVE):
        return f"{value:+.0%}"
    return f"{value:+.3g}" if metric != "class_mix" else f"{value:.3f} bits"


def _p(value: float | None) -> str:
    return "?" if value is None or not math.isfinite(value) else f"{value:.2g}"
