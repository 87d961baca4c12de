"""EAN: an Efficient Attention Network of depthwise-separable blocks with ECA, for 48x48 gray faces.

Layout (timm-style, config-driven): a thin stride-1 stem, then stages whose first block downsamples
(48 -> 24 -> 12 -> 6 -> 3), then global pooling and a linear classifier. Early downsampling keeps CPU
training time low; width and depth per stage are the knobs. The network normalises raw 0..255 pixels
itself, so the exported graph and every runtime see exactly what training saw.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from compression_worker.model.eca import ECA
from edgefer.jobs.architectures import EANConfig

# FER2013 train pixel statistics; fixed so that the graph's preprocessing never depends on the data at hand.
PIXEL_MEAN = 129.4
PIXEL_STD = 65.0


class PixelNormalize(nn.Module):
    """Maps raw 0..255 pixels to roughly zero-mean unit-variance inputs inside the graph."""

    def __init__(self, mean: float = PIXEL_MEAN, std: float = PIXEL_STD) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(1.0 / std))
        self.register_buffer("shift", torch.tensor(-mean / std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


def init_weights(model: nn.Module) -> None:
    """He init for convolutions, identity BatchNorm, a small classifier: the zoo's common starting point."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class DepthwiseSeparableECA(nn.Module):
    """3x3 depthwise -> 1x1 pointwise -> ECA, with an identity shortcut when the shape is kept."""

    def __init__(self, cin: int, cout: int, stride: int, eca_kernel: int | None = None) -> None:
        super().__init__()
        self.dw = ConvBNAct(cin, cin, 3, stride=stride, groups=cin)
        self.pw = ConvBNAct(cin, cout, 1, act=stride != 1 or cin != cout)
        self.eca = ECA(cout, eca_kernel)
        self.has_shortcut = stride == 1 and cin == cout
        self.act = nn.ReLU(inplace=True) if self.has_shortcut else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.eca(self.pw(self.dw(x)))
        if self.has_shortcut:
            out = self.act(out + x)
        return out


class EAN(nn.Module):
    family: ClassVar[str] = "ean"

    def __init__(self, config: EANConfig = EANConfig()) -> None:
        super().__init__()
        self.config = config
        self.normalize = PixelNormalize()
        self.stem = ConvBNAct(1, config.stem_channels, config.stem_kernel, stride=config.stem_stride)
        blocks: list[nn.Module] = []
        cin = config.stem_channels
        kernels = iter(config.eca_kernels)
        for width, depth, stride in zip(config.widths, config.depths, config.stage_strides):
            for i in range(depth):
                blocks.append(DepthwiseSeparableECA(cin, width, stride if i == 0 else 1, next(kernels, None)))
                cin = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(cin, config.num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float (N, 1, 48, 48) raw pixels 0..255 -> logits (N, num_classes)."""
        x = self.blocks(self.stem(self.normalize(x)))
        return self.classifier(self.dropout(torch.flatten(self.pool(x), 1)))


def build_ean(config: EANConfig | None = None) -> EAN:
    return EAN(config or EANConfig())


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
