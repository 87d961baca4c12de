"""High-capacity teachers for 48x48 gray faces: a CIFAR-style ResNet-18 and a VGG with BatchNorm.

They never ship to the edge (about 11 M and 9 M parameters, over 1 G multiply-adds a face); their only
job is to be clearly stronger than the EAN students they teach. Both keep the EAN contract (raw 0..255
pixels in, the same in-graph normalisation, logits out, `config` with `to_dict`/`from_dict`), so the
trainer, the checkpoints, the evaluation and the ONNX export treat them like any other model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from torch import nn

from compression_worker.model.ean import ConvBNAct, PixelNormalize, init_weights
from edgefer.labels import NUM_CLASSES


@dataclass(frozen=True)
class TeacherConfig:
    """Stem width, then per stage a width and a depth (residual blocks or convolutions)."""

    stem_channels: int = 64
    widths: tuple[int, ...] = (64, 128, 256, 512)
    depths: tuple[int, ...] = (2, 2, 2, 2)
    dropout: float = 0.3
    num_classes: int = NUM_CLASSES

    def __post_init__(self) -> None:
        if not self.widths or len(self.widths) != len(self.depths) or min(self.depths) < 1:
            raise ValueError("widths and depths must be non-empty, of equal length, depths >= 1")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TeacherConfig:
        return cls(**{**data, "widths": tuple(data["widths"]), "depths": tuple(data["depths"])})


class BasicBlock(nn.Module):
    """ResNet's two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(cin, cout, 3, stride=stride)
        self.conv2 = ConvBNAct(cout, cout, 3, act=False)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else ConvBNAct(cin, cout, 1, stride=stride, act=False)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class _Head(nn.Module):
    def __init__(self, cin: int, cfg: TeacherConfig) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cin, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(torch.flatten(self.pool(x), 1)))


class FaceResNet(nn.Module):
    """Stride-1 stem at 48x48, stages at 48, 24, 12, 6 (the CIFAR layout: small faces keep their detail)."""

    family: ClassVar[str] = "resnet"

    def __init__(self, config: TeacherConfig = TeacherConfig()) -> None:
        super().__init__()
        self.config = config
        self.normalize = PixelNormalize()
        self.stem = ConvBNAct(1, config.stem_channels, 3)
        blocks: list[nn.Module] = []
        cin = config.stem_channels
        for stage, (width, depth) in enumerate(zip(config.widths, config.depths)):
            for i in range(depth):
                blocks.append(BasicBlock(cin, width, 2 if i == 0 and stage > 0 else 1))
                cin = width
        self.blocks = nn.Sequential(*blocks)
        self.head = _Head(cin, config)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(self.normalize(x))))


class FaceVGG(nn.Module):
    """VGG with BatchNorm: per stage `depth` 3x3 convolutions, then 2x2 max pooling (48 -> 24 -> 12 -> 6 -> 3)."""

    family: ClassVar[str] = "vgg"

    def __init__(self, config: TeacherConfig = TeacherConfig(widths=(64, 128, 256, 512), depths=(2, 2, 3, 3))) -> None:
        super().__init__()
        self.config = config
        self.normalize = PixelNormalize()
        layers: list[nn.Module] = []
        cin = 1
        for width, depth in zip(config.widths, config.depths):
            for _ in range(depth):
                layers.append(ConvBNAct(cin, width, 3))
                cin = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = _Head(cin, config)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.normalize(x)))


def _init(model: nn.Module) -> None:
    init_weights(model)
    for m in model.modules():  # zero-init the last BatchNorm of each residual branch (Goyal et al. 2017)
        if isinstance(m, BasicBlock):
            nn.init.zeros_(m.conv2[1].weight)
