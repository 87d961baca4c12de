"""Per-dimension keep counts that reach a multiply-add target: uniform, or derived from importance.

Derived: one global threshold over the layer-normalised scores; a dimension keeps its channels
scoring at or above it, but never fewer than a floor (a fraction of its channels, and a minimum
count) and never loses more than a cap. The threshold (or, for uniform, the ratio) is found by
bisection so that the pruned network's MACs just meet the target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from compression_worker.model.ean import EANConfig
from compression_worker.prune.structure import ChannelDim, config_with, macs_of
from edgefer.jobs.recipe import RATIO_MODES


@dataclass(frozen=True)
class RatioPolicy:
    mode: str = "derived"  # derived | uniform
    min_keep_fraction: float = 0.2
    min_keep: int = 4
    max_ratio: float = 0.8
    channel_multiple: int = 8  # kept channels rounded up to this: onnxruntime's CPU kernels block channels by 8


    def __post_init__(self) -> None:
        if self.mode not in RATIO_MODES:
            raise ValueError(f"ratio mode must be derived or uniform, got {self.mode!r}")
        if self.channel_multiple < 1:
            raise ValueError(f"channel_multiple must be >= 1, got {self.channel_multiple}")

    def floor(self, channels: int) -> int:
        return min(channels, max(self.min_keep, math.ceil(self.min_keep_fraction * channels), math.ceil((1 - self.max_ratio) * channels)))

    def round(self, keep: int, channels: int) -> int:
        return min(channels, math.ceil(keep / self.channel_multiple) * self.channel_multiple)


def keep_uniform(dims: list[ChannelDim], ratio: float, policy: RatioPolicy) -> dict[str, int]:
    return {d.key: policy.round(max(policy.floor(d.channels), round(d.channels * (1 - ratio))), d.channels) for d in dims}


def keep_above(dims: list[ChannelDim], threshold: float, policy: RatioPolicy) -> dict[str, int]:
    return {d.key: policy.round(max(policy.floor(d.channels), int((d.scores >= threshold).sum())), d.channels) for d in dims}


def plan_keep(
    config: EANConfig, eca_kernels: tuple[int, ...], dims: list[ChannelDim], target_reduction: float, policy: RatioPolicy
) -> dict[str, int]:
    """Keep counts whose MACs are at most (1 - target_reduction) of `config`'s; ValueError if unreachable."""
    if not 0 < target_reduction < 1:
        raise ValueError(f"target MAC reduction must be in (0, 1), got {target_reduction}")
    budget = (1 - target_reduction) * macs_of(config)

    def keep_at(t: float) -> dict[str, int]:
        return keep_uniform(dims, t, policy) if policy.mode == "uniform" else keep_above(dims, t, policy)

    def fits(t: float) -> bool:
        return macs_of(config_with(config, keep_at(t), eca_kernels)) <= budget

    lo, hi = 0.0, 1.0 if policy.mode == "uniform" else float(torch.cat([d.scores for d in dims]).max()) + 1e-6
    if not fits(hi):
        raise ValueError(
            f"a {100 * target_reduction:.0f}% MAC reduction is not reachable with at most {100 * policy.max_ratio:.0f}% "
            f"of a layer pruned and at least {policy.min_keep} channels kept"
        )
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return keep_at(hi)
