"""Canary against stable with a stated confidence: for each metric a test from scipy (is the canary worse at all?)
and one-sided confidence bounds of the effect (by how much?), computed from what the nodes export: histogram
bucket counts, class counts, sums and counters.

An effect is always "how much worse the canary is" in the metric's own unit, so a check has one rule: it fails when
the lower bound is at or above the effect floor (worse by at least the floor, with confidence), passes when the upper
bound is below it (any regression is smaller than what matters), and is inconclusive in between.

    model_pNN     relative change of the NN-th percentile of the model's own time per face (0.2 = 20% slower);
                  Mann-Whitney U on the bucket counts, bounds by the bootstrap (multinomial resampling of the
                  buckets, the bootstrap of binned data)
    latency_pNN   the same for the whole frame's time (what a client waits for)
    class_mix     Jensen-Shannon divergence (bits) of the predicted-class distributions; chi-square test of
                  homogeneity, bounds by the basic bootstrap (which corrects the divergence's upward bias)
    confidence    drop of the mean top-1 confidence; Welch's t test, normal bounds (variance from the histogram)
    error_rate    increase of errors per request; Fisher's exact test, Newcombe's bounds from Wilson intervals
    dropped_rate  the same for dropped stream frames per frame

Frames are treated as independent draws; a node-level disturbance (one board busy with something else) is not
sampling noise, which is one reason every check has an effect floor and not only a p-value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from edgefer.rollouts.window import Window, js_divergence

MAX_RESAMPLES = 100_000


@dataclass(frozen=True)
class Comparison:
    """One metric, canary against stable, at one look."""

    metric: str
    test: str
    canary: float  # the metric on each side, in `unit`
    stable: float
    unit: str
    effect: float  # how much worse the canary is (the check's unit)
    lower: float  # one-sided confidence bounds of the effect at the look's level
    upper: float
    p_value: float  # the test of "the canary is no worse than stable"
    n_canary: int
    n_stable: int

    def to_dict(self) -> dict:
        """For the rollout record and decision log: plain JSON, so an unknown value (nothing to compare yet) is null,
        not NaN or Infinity, which JSON readers other than Python's refuse."""
        return {k: (round(v, 6) if math.isfinite(v) else None) if isinstance(v, float) else v
                for k, v in asdict(self).items()}


Comparator = Callable[[Window, Window, float], Comparison]


def look_alpha(alpha: float, look: int) -> float:
    """The error rate one look may spend, 6 alpha / (pi^2 k^2) at look k: summed over any number of looks it is
    alpha, so a step that is looked at again and again still decides wrongly with probability at most alpha."""
    return alpha * 6 / (math.pi ** 2 * look ** 2)


def resamples(alpha: float) -> int:
    """Enough bootstrap draws to put about 50 beyond a bound of level alpha."""
    return int(min(MAX_RESAMPLES, max(2000, math.ceil(50 / alpha))))


def _inconclusive(metric: str, test: str, unit: str, n_c: int, n_s: int) -> Comparison:
    """Nothing to compare on one side: bounds that decide nothing."""
    return Comparison(metric, test, math.nan, math.nan, unit, math.nan, -math.inf, math.inf, math.nan, n_c, n_s)


# -- latency ---------------------------------------------------------------------------------------------------


def bucket_counts(buckets: dict[str, int], bounds: list[float]) -> np.ndarray:
    """Per-bucket counts at `bounds` (sorted, ending with +Inf) from a cumulative histogram."""
    by_bound = {float(le): count for le, count in buckets.items()}
    cumulative = np.array([by_bound.get(b, 0) for b in bounds], dtype=np.int64)
    return np.diff(cumulative, prepend=0).clip(min=0)


def shared_bounds(a: dict[str, int], b: dict[str, int]) -> list[float]:
    """The bucket bounds both histograms have (nodes of different releases may use different buckets)."""
    bounds = sorted({float(le) for le in a} & {float(le) for le in b})
    return bounds if bounds and math.isinf(bounds[-1]) else []


def histogram_quantiles(counts: np.ndarray, bounds: list[float], q: float) -> np.ndarray:
    """The q-quantile of each row of per-bucket `counts`, interpolated inside its bucket as Prometheus's
    histogram_quantile does (the largest finite bound when it falls in +Inf)."""
    counts = np.atleast_2d(counts)
    edges = np.array([0.0, *bounds[:-1], bounds[-2] if len(bounds) > 1 else 0.0])
    cumulative = counts.cumsum(axis=1)
    target = q * cumulative[:, -1:]
    index = (cumulative >= target).argmax(axis=1)
    rows = np.arange(len(counts))
    below = np.where(index > 0, cumulative[rows, np.maximum(index - 1, 0)], 0)
    inside = counts[rows, index]
    fraction = np.where(inside > 0, (target[:, 0] - below) / np.maximum(inside, 1), 0.0)
    lower, upper = edges[index], edges[index + 1]
    return lower + (upper - lower) * fraction


def time_quantile(q: float, histogram: str = "latency") -> Comparator:
    """The q-quantile of a time histogram of the window: `latency` (per frame) or `model` (per face)."""
    metric = f"{histogram}_p{round(q * 100):d}"

    def compare(canary: Window, stable: Window, alpha: float) -> Comparison:
        buckets_c, buckets_s = getattr(canary, f"{histogram}_buckets"), getattr(stable, f"{histogram}_buckets")
        bounds = shared_bounds(buckets_c, buckets_s)
        counts_c = bucket_counts(buckets_c, bounds) if bounds else np.zeros(0, np.int64)
        counts_s = bucket_counts(buckets_s, bounds) if bounds else np.zeros(0, np.int64)
        n_c, n_s = int(counts_c.sum()), int(counts_s.sum())
        if min(n_c, n_s) == 0:
            return _inconclusive(metric, "Mann-Whitney U", "ms", n_c, n_s)
        q_c, q_s = (float(histogram_quantiles(c, bounds, q)[0]) for c in (counts_c, counts_s))
        index = np.arange(len(bounds))
        p_value = float(stats.mannwhitneyu(np.repeat(index, counts_c), np.repeat(index, counts_s),
                                           alternative="greater", method="asymptotic").pvalue)
        rng = np.random.default_rng(0)
        draws = resamples(alpha)
        boot_c = histogram_quantiles(rng.multinomial(n_c, counts_c / n_c, size=draws), bounds, q)
        boot_s = histogram_quantiles(rng.multinomial(n_s, counts_s / n_s, size=draws), bounds, q)
        ratios = boot_c / np.maximum(boot_s, 1e-9) - 1
        return Comparison(metric, "Mann-Whitney U", 1e3 * q_c, 1e3 * q_s, "ms", q_c / max(q_s, 1e-9) - 1,
                          float(np.quantile(ratios, alpha)), float(np.quantile(ratios, 1 - alpha)), p_value, n_c, n_s)

    return compare


# -- predicted classes -----------------------------------------------------------------------------------------


def class_mix(canary: Window, stable: Window, alpha: float) -> Comparison:
    counts_c, counts_s = np.array(canary.classes, np.int64), np.array(stable.classes, np.int64)
    n_c, n_s = int(counts_c.sum()), int(counts_s.sum())
    if min(n_c, n_s) == 0:
        return _inconclusive("class_mix", "chi-square", "bits", n_c, n_s)
    seen = (counts_c + counts_s) > 0
    table = np.stack([counts_c[seen], counts_s[seen]])
    p_value = float(stats.chi2_contingency(table).pvalue) if seen.sum() > 1 else 1.0
    p_c, p_s = counts_c / n_c, counts_s / n_s
    rng = np.random.default_rng(0)
    draws = resamples(alpha)
    boot_c = rng.multinomial(n_c, p_c, size=draws) / n_c
    boot_s = rng.multinomial(n_s, p_s, size=draws) / n_s
    divergences = _js_rows(boot_c, boot_s)
    effect = js_divergence(list(p_c), list(p_s))
    # The divergence of samples overstates the distributions' own (never below 0, up by ~(k-1)/n), and the draws
    # from the samples overstate it again: the basic bootstrap's bounds (2 x estimate - the draws' quantiles)
    # take that bias back out, where plain percentiles would fail a canary whose true shift is below the floor.
    lower = max(0.0, 2 * effect - float(np.quantile(divergences, 1 - alpha)))
    upper = max(0.0, 2 * effect - float(np.quantile(divergences, alpha)))
    return Comparison("class_mix", "chi-square", 0.0, 0.0, "bits", effect, lower, upper, p_value, n_c, n_s)


def _js_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence (bits) of each pair of rows."""
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0).sum(axis=1)
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0).sum(axis=1)
    return 0.5 * kl_p + 0.5 * kl_q


# -- confidence ------------------------------------------------------------------------------------------------


def histogram_variance(buckets: dict[str, int], mean: float) -> float:
    """The variance of what a cumulative histogram counted, each bucket at its midpoint (Sheppard-style: an
    estimate, good enough for a standard error)."""
    ordered = sorted((float(le), count) for le, count in buckets.items())
    total, lower, below, spread = 0, 0.0, 0, 0.0
    for le, count in ordered:
        inside = count - below
        if inside > 0:
            middle = (lower + le) / 2 if math.isfinite(le) else lower
            spread += inside * (middle - mean) ** 2
            total += inside
        lower, below = (le if math.isfinite(le) else lower), count
    return spread / max(1, total - 1)


def confidence_drop(canary: Window, stable: Window, alpha: float) -> Comparison:
    n_c, n_s = canary.faces, stable.faces
    if min(n_c, n_s) < 2:
        return _inconclusive("confidence", "Welch's t", "", n_c, n_s)
    m_c, m_s = canary.mean_confidence, stable.mean_confidence
    v_c = histogram_variance(canary.confidence_buckets, m_c)
    v_s = histogram_variance(stable.confidence_buckets, m_s)
    se = math.sqrt(v_c / n_c + v_s / n_s)
    if se == 0:
        p_value = 0.0 if m_c < m_s else 1.0
    else:
        p_value = float(stats.ttest_ind_from_stats(m_c, math.sqrt(v_c), n_c, m_s, math.sqrt(v_s), n_s,
                                                   equal_var=False, alternative="less").pvalue)
    z = float(stats.norm.ppf(1 - alpha))
    drop = m_s - m_c
    return Comparison("confidence", "Welch's t", m_c, m_s, "", drop, drop - z * se, drop + z * se, p_value, n_c, n_s)


# -- rates -----------------------------------------------------------------------------------------------------


def _wilson(k: int, n: int, alpha: float) -> tuple[float, float]:
    interval = stats.binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="wilson")
    return float(interval.low), float(interval.high)


def rate_increase(metric: str, events: Callable[[Window], tuple[int, int]]) -> Comparator:
    """`events(window)` -> (bad, total)."""

    def compare(canary: Window, stable: Window, alpha: float) -> Comparison:
        (k_c, n_c), (k_s, n_s) = events(canary), events(stable)
        if min(n_c, n_s) == 0:
            return _inconclusive(metric, "Fisher's exact", "", n_c, n_s)
        r_c, r_s = k_c / n_c, k_s / n_s
        p_value = float(stats.fisher_exact([[k_c, n_c - k_c], [k_s, n_s - k_s]], alternative="greater").pvalue)
        (l_c, u_c), (l_s, u_s) = _wilson(k_c, n_c, alpha), _wilson(k_s, n_s, alpha)
        lower = r_c - r_s - math.sqrt((r_c - l_c) ** 2 + (u_s - r_s) ** 2)  # Newcombe's hybrid score bounds
        upper = r_c - r_s + math.sqrt((u_c - r_c) ** 2 + (r_s - l_s) ** 2)
        return Comparison(metric, "Fisher's exact", r_c, r_s, "", r_c - r_s, lower, upper, p_value, n_c, n_s)

    return compare


COMPARATORS: dict[str, Comparator] = {
    "model_p50": time_quantile(0.5, "model"),
    "model_p90": time_quantile(0.9, "model"),
    "latency_p50": time_quantile(0.5),
    "latency_p90": time_quantile(0.9),
    "latency_p99": time_quantile(0.99),
    "class_mix": class_mix,
    "confidence": confidence_drop,
    "error_rate": rate_increase("error_rate", lambda w: (w.errors, w.ok + w.errors)),
    "dropped_rate": rate_increase("dropped_rate", lambda w: (w.dropped, w.ok + w.dropped)),
}
