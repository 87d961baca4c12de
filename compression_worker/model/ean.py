"""EAN: an Efficient Attention Network of depthwise-separable blocks with ECA, for 48x48 gray faces.

Layout (timm-style, config-driven): a thin stride-1 stem, then stages whose first block downsamples
(48 -> 24 -> 12 -> 6 -> 3), then global pooling and a linear classifier. Early downsampling keeps CPU
training time low; width and depth per stage are the knobs. The network normalises raw 0..255 pixels
itself, so the exported graph and every runtime see exactly what training saw.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from torch import nn

from compression_worker.model.eca import ECA
from edgefer.labels import NUM_CLASSES

# FER2013 train pixel statistics; fixed so that the graph's preprocessing never depends on the data at hand.
PIXEL_MEAN = 129.4
PIXEL_STD = 65.0


@dataclass(frozen=True)
class EANConfig:
    """Stem, then per stage a width, a depth and the stride of its first block."""

    stem_channels: int = 24
    widths: tuple[int, ...] = (48, 96, 160, 256)
    depths: tuple[int, ...] = (2, 2, 3, 1)
    strides: tuple[int, ...] = ()  # empty: every stage downsamples by 2
    stem_kernel: int = 3
    stem_stride: int = 1
    dropout: float = 0.2
    num_classes: int = NUM_CLASSES
    eca_kernels: tuple[int, ...] = ()  # per block; empty: adaptive to the width (pinned when pruning changes widths)

    def __post_init__(self) -> None:
        if not self.widths or len(self.widths) != len(self.depths):
            raise ValueError("widths and depths must be non-empty and of equal length")
        if self.strides and len(self.strides) != len(self.widths):
            raise ValueError("strides, when given, needs one entry per stage")
        if min(self.widths) < 1 or min(self.depths) < 1 or self.stem_channels < 1:
            raise ValueError("widths, depths and stem_channels must be positive")
        if self.eca_kernels and len(self.eca_kernels) != sum(self.depths):
            raise ValueError("eca_kernels, when given, needs one entry per block")

    @property
    def stage_strides(self) -> tuple[int, ...]:
        return self.strides or (2,) * len(self.widths)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EANConfig:
        values = dict(data)
        for key in ("widths", "depths", "strides", "eca_kernels"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


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


# Named configurations: "ean-m" is the shipped baseline, "ean-s" the CPU-budget student that is distilled and
# pruned for the edge (their numbers: docs/BENCHMARKS.md).
PRESETS: dict[str, EANConfig] = {
    "ean-s": EANConfig(stem_channels=16, widths=(32, 64, 128, 192), depths=(1, 2, 2, 2)),
    "ean-m": EANConfig(),
    "ean-l": EANConfig(stem_channels=16, widths=(32, 80, 160, 256), depths=(1, 2, 3, 2)),
    "ean-xs": EANConfig(stem_channels=16, widths=(16, 32, 48), depths=(1, 1, 1)),  # smoke tests and demos only
}
