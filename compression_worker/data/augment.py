"""Batched face augmentation on tensors, so it runs at the speed of the model on CPU and GPU alike.

One random affine per face (rotation, scale, shift as a padded random crop, horizontal flip) through
`grid_sample`, then brightness and contrast jitter and optional random erasing, all on raw 0..255 pixels.
Vertical flips and large rotations are left out: they make faces that cameras do not produce.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from edgefer.jobs.recipe import AugmentConfig


def augment_faces(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """x: float (N, 1, H, W) raw pixels -> augmented copy of the same shape and range."""
    n, _, h, w = x.shape
    dev = x.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(n, device=dev, generator=generator) * (high - low) + low

    angle = uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg) * (math.pi / 180.0)
    scale = uniform(*cfg.scale_range)
    flip = torch.where(torch.rand(n, device=dev, generator=generator) < cfg.hflip_prob, -1.0, 1.0)
    shift_x = uniform(-cfg.max_shift_px, cfg.max_shift_px) * (2.0 / w)
    shift_y = uniform(-cfg.max_shift_px, cfg.max_shift_px) * (2.0 / h)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, shift_x], dim=1), torch.stack([sin * flip, cos, shift_y], dim=1)], dim=1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    contrast = uniform(1.0 - cfg.contrast, 1.0 + cfg.contrast).view(n, 1, 1, 1)
    brightness = uniform(-cfg.brightness, cfg.brightness).view(n, 1, 1, 1) * 255.0
    out = ((out - mean) * contrast + mean + brightness).clamp_(0.0, 255.0)

    if cfg.erase_prob > 0:
        out = _random_erase(out, cfg, generator)
    return out


def _random_erase(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None) -> torch.Tensor:
    """Blank one random rectangle (up to erase_max_fraction of each side) in a share of the faces."""
    n, _, h, w = x.shape
    dev = x.device
    chosen = torch.rand(n, device=dev, generator=generator) < cfg.erase_prob
    eh = (torch.rand(n, device=dev, generator=generator) * cfg.erase_max_fraction * h).long() + 1
    ew = (torch.rand(n, device=dev, generator=generator) * cfg.erase_max_fraction * w).long() + 1
    top = (torch.rand(n, device=dev, generator=generator) * (h - eh + 1)).long()
    left = (torch.rand(n, device=dev, generator=generator) * (w - ew + 1)).long()
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    mask = (
        (rows >= top.view(n, 1, 1))
        & (rows < (top + eh).view(n, 1, 1))
        & (cols >= left.view(n, 1, 1))
        & (cols < (left + ew).view(n, 1, 1))
        & chosen.view(n, 1, 1)
    )
    fill = x.mean(dim=(1, 2, 3)).view(n, 1, 1).expand(n, h, w)
    return torch.where(mask.unsqueeze(1), fill.unsqueeze(1), x)
