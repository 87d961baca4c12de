"""Canary analysis without labels: the checks a rollout spec lists, judged on canary and stable nodes' traffic
over the same bake window (edgefer/rollouts/window.py) with the statistics of edgefer/rollouts/statistics.py.

A step is looked at when each side has at least `min_faces` faces and again each time the canary's faces have
grown by `look_growth`; look k spends 6 alpha / (pi^2 k^2) of each check's error rate, so however many looks a
step takes, a check decides wrongly with probability at most 1 - confidence. At each look a check
    fails          when the lower confidence bound of its effect is at or above the effect floor,
    passes         when the upper bound is below it,
    is inconclusive otherwise, and says about how many canary faces would decide it.
The step fails when a check has failed more often than its failure limit, passes when every check passes, and
bakes on otherwise (up to the step's bake; then the spec's `on_inconclusive` applies).
"""

from __future__ import annotations

import math

from edgefer.rollouts.spec import MetricCheck, RolloutSpec
from edgefer.rollouts.statistics import COMPARATORS, Comparison, look_alpha
from edgefer.rollouts.verdict import Analysis, CheckResult
from edgefer.rollouts.window import Window


def judge(check: MetricCheck, comparison: Comparison, alpha: float) -> CheckResult:
    result = CheckResult(check.metric, "inconclusive", check.effect, check.confidence, alpha, comparison.to_dict())
    if comparison.lower >= check.effect:
        result.verdict = "fail"
    elif comparison.upper < check.effect:
        result.verdict = "pass"
    else:
        result.wants_faces = faces_to_decide(comparison, check.effect)
    return result


def faces_to_decide(c: Comparison, floor: float) -> int | None:
    """About how many canary faces put the bound on the effect's side of the floor, if the effect stays where it
    is (a bound's distance from the estimate shrinks as 1/sqrt(faces)); None when the estimate sits at the floor
    or nothing is known yet."""
    if not math.isfinite(c.effect) or not math.isfinite(c.lower) or not math.isfinite(c.upper):
        return None
    distance = c.effect - c.lower if c.effect >= floor else c.upper - c.effect
    margin = abs(c.effect - floor)
    if margin <= 1e-12 or distance <= 0:
        return None
    return math.ceil(round(c.n_canary * (distance / margin) ** 2, 6))


def analyse(spec: RolloutSpec, canary: Window, stable: Window, look: int = 1,
            failures: dict[str, int] | None = None) -> Analysis:
    """Look `look` (1-based) of a step at its window; `failures` are the failed looks per metric before it."""
    summary = [{"faces": w.faces, "frames": w.frames} for w in (canary, stable)]
    if min(canary.faces, stable.faces) < spec.min_faces:
        reason = (f"too few faces for a look (canary {canary.faces}, stable {stable.faces}; "
                  f"{spec.min_faces} each needed)")
        return Analysis("wait", reason, look, [], *summary, failures=dict(failures or {}))
    results = []
    for check in spec.checks:
        alpha = look_alpha(check.alpha, look)
        results.append(judge(check, COMPARATORS[check.metric](canary, stable, alpha), alpha))
    failures = dict(failures or {})
    for result in results:
        if result.verdict == "fail":
            failures[result.metric] = failures.get(result.metric, 0) + 1
    limits = {c.metric: c.failure_limit for c in spec.checks}
    failed = [r for r in results if r.verdict == "fail" and failures[r.metric] > limits[r.metric]]
    undecided = [r for r in results if r.verdict != "pass" and r not in failed]
    if failed:
        verdict, reason = "fail", "; ".join(r.describe() for r in failed)
    elif not undecided:
        verdict, reason = "pass", f"every check passed at look {look}"
    else:
        verdict, reason = "inconclusive", "undecided: " + "; ".join(r.describe() for r in undecided)
    return Analysis(verdict, reason, look, results, *summary, failures=failures)
