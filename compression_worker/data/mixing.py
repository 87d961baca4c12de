"""Mixup and CutMix on a batch of faces: the regulariser that long FER2013 schedules and teachers need.

A mixed batch is `lam * x + (1 - lam) * x[perm]` (mixup) or `x` with a box pasted from `x[perm]`
(CutMix); the loss then mixes whatever target it uses (hard labels, cached soft labels) with the same
`lam` and `perm`. A teacher in consistent distillation simply sees the mixed batch itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgefer.jobs.recipe import MixConfig


@dataclass(frozen=True)
class Mix:
    """How a batch was mixed: sample i is lam parts itself and 1 - lam parts sample perm[i]."""

    lam: float
    perm: torch.Tensor

    def blend(self, targets: torch.Tensor) -> torch.Tensor:
        """Mix per-sample target rows (one-hot or probabilities) the way the inputs were mixed."""
        return self.lam * targets + (1.0 - self.lam) * targets[self.perm]


def _uniform(generator: torch.Generator | None, device: torch.device) -> float:
    return float(torch.rand((), device=device, generator=generator))


def _beta(alpha: float, generator: torch.Generator | None, device: torch.device) -> float:
    """Beta(alpha, alpha) from two Gamma draws made with the run's own generator (so runs replay exactly)."""
    # torch's Gamma sampler takes no generator; a ratio of uniforms would bias it, so draw on a seeded CPU generator.
    seed = int(torch.randint(0, 2**31 - 1, (), device=device, generator=generator))
    cpu = torch.Generator().manual_seed(seed)
    a = torch._standard_gamma(torch.tensor([alpha, alpha]), generator=cpu)
    return float(a[0] / a.sum())


def mix_batch(x: torch.Tensor, cfg: MixConfig, generator: torch.Generator | None = None) -> tuple[torch.Tensor, Mix | None]:
    """x: (N, C, H, W) -> the mixed batch and how it was mixed (None when this batch is left as it is)."""
    if not cfg.enabled or len(x) < 2 or _uniform(generator, x.device) >= cfg.prob:
        return x, None
    use_cutmix = cfg.cutmix_alpha > 0 and (cfg.mixup_alpha == 0 or _uniform(generator, x.device) < cfg.cutmix_share)
    lam = _beta(cfg.cutmix_alpha if use_cutmix else cfg.mixup_alpha, generator, x.device)
    perm = torch.randperm(len(x), device=x.device, generator=generator)
    if not use_cutmix:
        return lam * x + (1.0 - lam) * x[perm], Mix(lam, perm)
    h, w = x.shape[-2:]
    cut = (1.0 - lam) ** 0.5
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = int(_uniform(generator, x.device) * h), int(_uniform(generator, x.device) * w)
    top, bottom = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    left, right = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    out = x.clone()
    out[..., top:bottom, left:right] = x[perm][..., top:bottom, left:right]
    lam = 1.0 - (bottom - top) * (right - left) / (h * w)  # the share actually kept, after clipping at the border
    return out, Mix(lam, perm)
