"""Channel importance criteria, pluggable into Torch-Pruning the way its own criteria are.

Each criterion maps a DepGraph group (the coupled layers of one channel dimension) to one score per
channel. `L2GammaImportance` is EdgeFER's: the L2 norm of every conv kernel that produces the channel
and the |gamma| of the BatchNorm after it, each divided by its layer's mean so that layers of any
size compare, then blended with a settable weight and averaged over the group's layers. Because the
scores are normalised per layer, one global threshold over them gives meaningful per-layer ratios.
"""

from __future__ import annotations

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.pruner import function

from edgefer.jobs.recipe import IMPORTANCES

_CONV_OUT = (function.prune_conv_out_channels, function.prune_depthwise_conv_out_channels)


class L2GammaImportance(tp.importance.Importance):
    def __init__(self, l2_weight: float = 0.5) -> None:
        if not 0.0 <= l2_weight <= 1.0:
            raise ValueError(f"l2_weight must be in [0, 1], got {l2_weight}")
        self.l2_weight = l2_weight

    @torch.no_grad()
    def __call__(self, group: tp.Group) -> torch.Tensor:
        kernel_terms: list[torch.Tensor] = []
        gamma_terms: list[torch.Tensor] = []
        root_size = len(group[0].root_idxs)
        for i, (dep, idxs) in enumerate(group):
            layer, fn = dep.layer, dep.pruning_fn
            order = torch.as_tensor(group[i].root_idxs)
            if isinstance(layer, nn.Conv2d) and fn in _CONV_OUT:
                norms = layer.weight.flatten(1).norm(dim=1)
                kernel_terms.append(_in_root_order(norms / norms.mean().clamp_min(1e-12), idxs, order, root_size))
            elif isinstance(layer, nn.BatchNorm2d) and fn == function.prune_batchnorm_out_channels:
                gammas = layer.weight.abs()
                gamma_terms.append(_in_root_order(gammas / gammas.mean().clamp_min(1e-12), idxs, order, root_size))
        parts = []
        if kernel_terms and self.l2_weight > 0:
            parts.append(self.l2_weight * torch.stack(kernel_terms).mean(0))
        if gamma_terms and self.l2_weight < 1:
            parts.append((1 - self.l2_weight) * torch.stack(gamma_terms).mean(0))
        return torch.stack(parts).sum(0) if parts else torch.ones(root_size)


def _in_root_order(per_channel: torch.Tensor, idxs: list[int], root_idxs: torch.Tensor, size: int) -> torch.Tensor:
    """Scores of a layer's channels `idxs`, placed at the positions of the group's root channels."""
    out = torch.zeros(size)
    out[root_idxs] = per_channel[torch.as_tensor(idxs)].float()
    return out




def make_importance(name: str, l2_weight: float = 0.5) -> tp.importance.Importance:
    """The criteria compared in docs/BENCHMARKS.md, by name."""
    if name == "l2-gamma":
        return L2GammaImportance(l2_weight)
    if name == "l1":  # Li et al. 2017: L1 norm of the kernels that produce the channel
        return tp.importance.MagnitudeImportance(p=1, normalizer=None, group_reduction="first")
    if name == "bn-gamma":  # network slimming: |gamma|
        return tp.importance.BNScaleImportance(normalizer=None)
    if name == "random":
        return tp.importance.RandomImportance()
    raise ValueError(f"unknown importance {name!r}: choose from {', '.join(IMPORTANCES)}")
