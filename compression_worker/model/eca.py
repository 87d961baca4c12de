"""Efficient Channel Attention (Wang et al., CVPR 2020): local cross-channel interaction without reduction.

A 1-D convolution over the pooled channel descriptor replaces SE's two FC layers, so the attention costs
k weights per layer and stays valid when channels are pruned (the kernel slides over any channel count).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def eca_kernel_size(channels: int, gamma: float = 2.0, b: float = 1.0) -> int:
    """The paper's adaptive rule k = |log2(C)/gamma + b/gamma|, rounded to the nearest odd number (min 1)."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class ECA(nn.Module):
    def __init__(self, channels: int, kernel_size: int | None = None) -> None:
        super().__init__()
        k = kernel_size or eca_kernel_size(channels)
        self.kernel_size = k
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=k // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[0], x.shape[1]
        descriptor = x.mean(dim=(2, 3)).reshape(n, 1, c)
        weights = torch.sigmoid(self.conv(descriptor)).reshape(n, c, 1, 1)
        return x * weights
