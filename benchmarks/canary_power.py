"""How many canary faces a check needs to decide, by effect size: the controller's own analysis on simulated
traffic, looked at as the controller looks (at min_faces, then each time the canary's faces grow 1.5x).

Each scenario is one check of the default spec against a canary that is worse by a given effect; the stable
side has three times the canary's faces (a 25% canary step). Traffic: log-normal times per face (sigma 0.3 of
the log, a busy board's spread), the FER2013 test class mix, Beta(5, 3) top-1 confidences, errors at a rate.

    python benchmarks/canary_power.py --runs 20
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections import Counter

import numpy as np

from edgefer.rollouts.analysis import analyse
from edgefer.rollouts.spec import RolloutSpec
from edgefer.rollouts.window import Window
from services.edge.metrics import CONFIDENCE_BUCKETS, VERSION_LATENCY_BUCKETS

CLASS_MIX = np.array([0.134, 0.015, 0.142, 0.248, 0.183, 0.116, 0.162])


def cumulative(values: np.ndarray, bounds: tuple[float, ...]) -> dict[str, int]:
    counts = np.searchsorted(np.sort(values), np.array(bounds), side="right")
    return {**{str(b): int(c) for b, c in zip(bounds, counts, strict=True)}, "+Inf": len(values)}


class Traffic:
    """One side's faces, drawn once; a window is a prefix of them (the looks of a step see growing data)."""

    def __init__(self, rng: np.random.Generator, faces: int, slower: float = 1.0, happy: float = 0.0,
                 drop: float = 0.0, errors: float = 0.0) -> None:
        mix = (1 - happy) * CLASS_MIX + happy * np.eye(7)[3]
        self.model = rng.lognormal(math.log(2e-4 * slower), 0.3, faces)
        self.classes = rng.choice(7, faces, p=mix / mix.sum())
        self.confidence = np.clip(rng.beta(5, 3, faces) - drop, 1 / 7, 1.0)
        self.errors = rng.random(faces) < errors

    def window(self, n: int) -> Window:
        errors = int(self.errors[:n].sum())
        return Window(frames=n, faces=n, classes=np.bincount(self.classes[:n], minlength=7).tolist(),
                      confidence_sum=float(self.confidence[:n].sum()),
                      confidence_buckets=cumulative(self.confidence[:n], CONFIDENCE_BUCKETS),
                      model_buckets=cumulative(self.model[:n], VERSION_LATENCY_BUCKETS),
                      latency_buckets=cumulative(self.model[:n] * 5, VERSION_LATENCY_BUCKETS), ok=n - errors,
                      errors=errors)


# metric -> (label of the effect, [(effect as the check measures it, traffic settings)])
SCENARIOS: dict[str, tuple[str, list[tuple[str, dict]]]] = {
    "model_p50": ("slower per face", [("+0%", {}), ("+10%", {"slower": 1.1}), ("+15%", {"slower": 1.15}),
                                      ("+25%", {"slower": 1.25}), ("+30%", {"slower": 1.3}),
                                      ("+50%", {"slower": 1.5})]),
    "class_mix": ("faces turned 'happy'", [("0 (JS 0)", {}), ("0.2 (JS 0.02)", {"happy": 0.2}),
                                           ("0.4 (JS 0.07)", {"happy": 0.4}), ("0.5 (JS 0.11)", {"happy": 0.5}),
                                           ("0.6 (JS 0.15)", {"happy": 0.6}), ("1.0 (JS 0.55)", {"happy": 1.0})]),
    "confidence": ("mean top-1 confidence drop", [("0", {}), ("0.05", {"drop": 0.05}), ("0.15", {"drop": 0.15}),
                                                  ("0.2", {"drop": 0.2})]),
    "error_rate": ("canary error rate (stable 0)", [("0", {}), ("0.01", {"errors": 0.01}),
                                                    ("0.04", {"errors": 0.04}), ("0.1", {"errors": 0.1})]),
}


def decide(spec: RolloutSpec, canary: Traffic, stable: Traffic, max_faces: int) -> tuple[str, int]:
    """The verdict and the canary's faces when it was reached, looking as the controller does."""
    n, look, failures = spec.min_faces, 1, {}
    while n <= max_faces:
        analysis = analyse(spec, canary.window(n), stable.window(3 * n), look, failures)
        if analysis.verdict in ("pass", "fail"):
            return analysis.verdict, n
        failures, look, n = analysis.failures, look + 1, math.ceil(n * spec.look_growth)
    return "undecided", max_faces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--max-faces", type=int, default=6000, help="canary faces at which a step gives up")
    parser.add_argument("--metrics", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    args = parser.parse_args()
    defaults = {c.metric: c for c in RolloutSpec().checks}
    print(f"{'check (floor)':<24} {'effect':<34} {'fail':>5} {'pass':>5} {'undecided':>9} {'median faces':>12}")
    for metric in args.metrics:
        label, effects = SCENARIOS[metric]
        check = defaults[metric]
        spec = RolloutSpec(checks=(check,))
        for index, (effect, settings) in enumerate(effects):
            outcomes: list[tuple[str, int]] = []
            for run in range(args.runs):
                rng = np.random.default_rng(1000 * index + run)
                canary, stable = Traffic(rng, 3 * args.max_faces, **settings), Traffic(rng, 3 * args.max_faces)
                outcomes.append(decide(spec, canary, stable, args.max_faces))
            verdicts = Counter(v for v, _ in outcomes)
            faces = statistics.median(n for v, n in outcomes if v != "undecided") if len(outcomes) > verdicts[
                "undecided"] else float("nan")
            print(f"{metric + f' ({check.effect:g})':<24} {label + ' ' + effect:<34} {verdicts['fail']:>5} "
                  f"{verdicts['pass']:>5} {verdicts['undecided']:>9} {faces:>12.0f}")


if __name__ == "__main__":
    main()
