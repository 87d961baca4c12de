"""The statistics of canary analysis on synthetic counts with known answers, the judge's rules, and the spec as
data (steps and checks, the shorthands and the flat keys of earlier releases)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edgefer.cli.registry import build_parser
from edgefer.cli.rollouts import spec_from_args
from edgefer.rollouts.analysis import analyse, faces_to_decide, judge
from edgefer.rollouts.spec import METRICS, CanaryStep, MetricCheck, RolloutSpec, RolloutSpecError
from edgefer.rollouts.statistics import (
    COMPARATORS,
    Comparison,
    class_mix,
    histogram_quantiles,
    look_alpha,
    rate_increase,
    time_quantile,
)
from edgefer.rollouts.verdict import check_lines
from edgefer.rollouts.window import Window, js_divergence
from services.edge.metrics import CONFIDENCE_BUCKETS, VERSION_LATENCY_BUCKETS

CLASS_MIX = [0.14, 0.02, 0.14, 0.25, 0.17, 0.11, 0.17]


def cumulative(values: np.ndarray, bounds: tuple[float, ...]) -> dict[str, int]:
    """A Prometheus-style cumulative histogram of `values`."""
    return {**{str(b): int((values <= b).sum()) for b in bounds}, "+Inf": len(values)}


def window(rng: np.random.Generator, faces: int, slower: float = 1.0, classes: list[float] = CLASS_MIX,
           confidence_drop: float = 0.0, errors: int = 0) -> Window:
    """Traffic like a node's: log-normal time per frame around 2 ms, a class mix, top-1 confidences."""
    latency = rng.lognormal(math.log(0.002 * slower), 0.3, faces)
    confidence = np.clip(rng.beta(5, 3, faces) - confidence_drop, 1 / 7, 1.0)
    return Window(frames=faces, faces=faces, classes=np.bincount(rng.choice(7, faces, p=classes), minlength=7).tolist(),
                  confidence_sum=float(confidence.sum()), confidence_buckets=cumulative(confidence, CONFIDENCE_BUCKETS),
                  latency_buckets=cumulative(latency, VERSION_LATENCY_BUCKETS), ok=faces, errors=errors)


def test_every_metric_a_spec_may_name_has_a_comparison() -> None:
    assert set(COMPARATORS) == set(METRICS)


def test_the_error_rate_spent_over_any_number_of_looks_stays_within_alpha() -> None:
    assert look_alpha(0.05, 1) == pytest.approx(0.05 * 6 / math.pi ** 2)
    assert sum(look_alpha(0.05, k) for k in range(1, 100_000)) < 0.05
    assert look_alpha(0.05, 3) < look_alpha(0.05, 2) < look_alpha(0.05, 1)


def test_histogram_quantiles_interpolate_as_prometheus_does() -> None:
    bounds = [0.001, 0.005, math.inf]
    assert histogram_quantiles(np.array([98, 2, 0]), bounds, 0.99)[0] == pytest.approx(0.003)
    assert histogram_quantiles(np.array([50, 0, 50]), bounds, 0.99)[0] == pytest.approx(0.005)  # +Inf: the last bound
    assert histogram_quantiles(np.array([[10, 0, 0], [0, 10, 0]]), bounds, 0.5) == pytest.approx([0.0005, 0.003])


def test_latency_known_answers() -> None:
    same = {"0.001": 50, "0.002": 100, "+Inf": 100}
    result = time_quantile(0.5)(Window(latency_buckets=same), Window(latency_buckets=dict(same)), 0.05)
    assert result.effect == 0 and result.lower < 0 < result.upper and result.p_value > 0.3
    slower = {"0.001": 0, "0.002": 100, "+Inf": 100}  # every frame in the upper bucket: median 1 ms -> 1.5 ms
    result = time_quantile(0.5)(Window(latency_buckets=slower), Window(latency_buckets=same), 0.05)
    assert result.effect == pytest.approx(0.5) and result.p_value < 1e-10 and result.lower > 0.2
    nothing = time_quantile(0.5)(Window(), Window(latency_buckets=same), 0.05)
    assert nothing.lower == -math.inf and nothing.upper == math.inf  # decides nothing
    stored = json.loads(json.dumps(nothing.to_dict(), allow_nan=False))  # plain JSON in the rollout record
    assert stored["lower"] is None and stored["effect"] is None
    unsure = judge(MetricCheck("latency_p50", 0.2), nothing, 0.05)
    assert unsure.verdict == "inconclusive" and "latency_p50 ? (bounds ? .. ?" in unsure.describe()


def test_class_mix_known_answers() -> None:
    same = class_mix(Window(classes=[10, 0, 10, 40, 20, 10, 10]), Window(classes=[10, 0, 10, 40, 20, 10, 10]), 0.05)
    assert same.effect == 0 and same.p_value == pytest.approx(1.0)
    disjoint = class_mix(Window(classes=[0, 0, 0, 100, 0, 0, 0]), Window(classes=[50, 0, 0, 0, 50, 0, 0]), 0.05)
    assert disjoint.effect == pytest.approx(1.0) and disjoint.lower == pytest.approx(1.0) and disjoint.p_value < 1e-20
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)


def test_rate_bounds_are_newcombes() -> None:
    """Newcombe (1998), method 10: 56/70 against 48/80, difference 0.2, 95% interval 0.0524 to 0.3339."""
    compare = rate_increase("error_rate", lambda w: (w.errors, w.ok + w.errors))
    result = compare(Window(errors=56, ok=14), Window(errors=48, ok=32), 0.025)
    assert result.effect == pytest.approx(0.2)
    assert (result.lower, result.upper) == (pytest.approx(0.0524, abs=1e-4), pytest.approx(0.3339, abs=1e-4))
    assert result.p_value < 0.02


@pytest.mark.parametrize(("metric", "slow"), [("latency_p50", 1.5), ("latency_p90", 1.5), ("class_mix", None)])
def test_false_and_true_decisions_over_simulated_windows(metric: str, slow: float | None) -> None:
    """Same traffic on both sides: a fail (lower bound above the floor) in at most alpha of windows; a canary
    50% slower (or answering one class) fails nearly always with 300 canary faces."""
    rng = np.random.default_rng(7)
    check = MetricCheck(metric, 0.2 if slow else 0.1)
    same = [judge(check, COMPARATORS[metric](window(rng, 300), window(rng, 900), 0.05), 0.05).verdict
            for _ in range(60)]
    assert same.count("fail") <= 3 and same.count("pass") >= 48, same
    one_class = [0, 0, 0, 1, 0, 0, 0]
    bad = [judge(check, COMPARATORS[metric](window(rng, 300, slower=slow or 1.0, classes=CLASS_MIX if slow else one_class),
                                            window(rng, 900), 0.05), 0.05).verdict for _ in range(20)]
    assert bad.count("fail") >= 19, bad


def test_the_judge_fails_passes_or_says_how_many_faces_would_decide() -> None:
    check = MetricCheck("latency_p90", 0.2)

    def comparison(effect: float, lower: float, upper: float) -> Comparison:
        return Comparison("latency_p90", "Mann-Whitney U", 3.0, 2.0, "ms", effect, lower, upper, 0.01, 100, 300)

    assert judge(check, comparison(0.5, 0.3, 0.7), 0.05).verdict == "fail"
    assert judge(check, comparison(0.0, -0.1, 0.1), 0.05).verdict == "pass"
    unsure = judge(check, comparison(0.3, 0.1, 0.5), 0.05)
    assert unsure.verdict == "inconclusive" and unsure.wants_faces == 400  # bound 0.2 away, 0.1 needed: 4x the faces
    assert faces_to_decide(comparison(0.2, 0.1, 0.3), 0.2) is None  # sits on the floor: no count decides it
    assert "wants ~400 canary faces" in unsure.describe()


def test_a_step_fails_passes_or_bakes_on_and_a_failure_limit_tolerates_failed_looks() -> None:
    rng = np.random.default_rng(3)
    spec = RolloutSpec(min_faces=50, checks=(MetricCheck("latency_p50", 0.2, failure_limit=1),
                                             MetricCheck("class_mix", 0.1)))
    stable = window(rng, 900)
    assert analyse(spec, window(rng, 300), stable).verdict == "pass"
    assert analyse(spec, Window(faces=10), stable).verdict == "wait"
    slow = window(rng, 300, slower=1.5)
    first = analyse(spec, slow, stable, look=1)
    assert first.verdict == "inconclusive" and first.failures == {"latency_p50": 1}  # one failed look tolerated
    second = analyse(spec, slow, stable, look=2, failures=first.failures)
    assert second.verdict == "fail" and "latency_p50 +" in second.reason and "Mann-Whitney U p=" in second.reason
    lines = check_lines(second.to_dict())
    assert lines[0].startswith("FAIL latency_p50") and lines[1].startswith("ok   class_mix")
    old = {"checks": [{"metric": "p99 latency ms", "canary": 3.0, "stable": 2.0, "limit": 5.0, "passed": True}]}
    assert check_lines(old) == ["ok   p99 latency ms: canary 3.0, stable 2.0, limit 5.0"]  # a record of an earlier release


def test_a_spec_is_steps_and_checks_with_shorthands_and_the_flat_keys_of_earlier_releases(caplog) -> None:
    spec = RolloutSpec.from_dict({"steps": "10:1m:pause,50,100", "bake": "2m",
                                  "checks": [{"metric": "latency_p90", "effect": 0.3}]})
    assert spec.steps == (CanaryStep(10, "1m", True), CanaryStep(50, "2m"), CanaryStep(100, "2m"))
    assert spec.checks == (MetricCheck("latency_p90", 0.3),)
    assert RolloutSpec.from_dict(spec.to_dict()) == spec and spec.longest_s() == 60 + 120 + 120 + 3 * 5
    legacy = RolloutSpec.from_dict({"steps": "50,100", "bake": 30, "max_divergence": 0.2, "max_latency_ratio": 1.5,
                                    "latency_slack_ms": 2.0, "max_wait_bakes": 3})
    effects = {c.metric: c.effect for c in legacy.checks}
    assert effects["class_mix"] == 0.2 and effects["latency_p90"] == 0.5
    assert legacy.steps[0].bake == "30" and "max_divergence is now the effect of check(s) class_mix" in caplog.text
    for bad, message in (({"steps": "5,50"}, "ending at 100"), ({"steps": [{"share": 150}]}, "share"),
                         ({"checks": [{"metric": "speed", "effect": 1}]}, "unknown"),
                         ({"checks": [{"metric": "class_mix", "effect": 0}]}, "effect must be > 0"),
                         ({"checks": [{"metric": "class_mix", "effect": 0.1, "confidence": 1.0}]}, "confidence"),
                         ({"on_inconclusive": "guess"}, "on_inconclusive"), ({"max_divergence": "x"}, "not a number")):
        with pytest.raises(RolloutSpecError, match=message):
            RolloutSpec.from_dict(bad)


def test_rollout_start_flags_make_the_same_spec_as_json(tmp_path) -> None:
    args = build_parser().parse_args(["rollout", "start", "7", "--steps", "10:1m:pause,50,100", "--bake", "2m",
                                      "--check", "latency_p90=0.3@0.99", "--min-faces", "50",
                                      "--on-inconclusive", "rollback"])
    spec = spec_from_args(args)
    assert spec.steps == (CanaryStep(10, "1m", True), CanaryStep(50, "2m"), CanaryStep(100, "2m"))
    checks = {c.metric: c for c in spec.checks}
    assert checks["latency_p90"] == MetricCheck("latency_p90", 0.3, 0.99) and len(checks) == len(RolloutSpec().checks)
    assert spec.min_faces == 50 and spec.on_inconclusive == "rollback"
    file = tmp_path / "rollout.json"
    file.write_text('{"steps": [{"share": 20}, {"share": 100}], "checks": [{"metric": "class_mix", "effect": 0.05}]}')
    from_file = spec_from_args(build_parser().parse_args(["rollout", "start", "7", "--spec", str(file), "--bake", "30s"]))
    assert from_file.steps == (CanaryStep(20, "30s"), CanaryStep(100, "30s"))
    assert from_file.checks == (MetricCheck("class_mix", 0.05),)


def test_a_node_reports_its_models_own_time_per_face_by_version() -> None:
    """The model_p50 check's input: an onnxruntime call's time over its faces, in the status record's field stats."""
    from services.edge.field_stats import field_summary
    from services.edge.metrics import EdgeMetrics

    metrics = EdgeMetrics()
    metrics.record_model_time("3", 0.002, faces=4)  # 0.5 ms a face
    metrics.record_model_time("3", 0.001, faces=0)  # no faces: nothing to count
    versions, _ = field_summary(metrics.registry)
    buckets = versions["3"]["model"]["buckets"]
    assert buckets["+Inf"] == 1 and buckets["0.0005"] == 1 and buckets["0.00042"] == 0
