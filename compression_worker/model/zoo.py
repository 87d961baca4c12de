"""Every trainable architecture by name: the EAN presets that ship and the teachers that never do.

A checkpoint records its family and config, so `from_config` rebuilds any of them without knowing
in advance which kind of network a file holds.
"""

from __future__ import annotations

from torch import nn

from compression_worker.model.ean import EAN, EANConfig
from compression_worker.model.teacher_nets import FaceResNet, FaceVGG, TeacherConfig
from edgefer.jobs.architectures import PRESETS

FAMILIES: dict[str, tuple[type[nn.Module], type]] = {
    "ean": (EAN, EANConfig),
    "resnet": (FaceResNet, TeacherConfig),
    "vgg": (FaceVGG, TeacherConfig),
}

TEACHERS: dict[str, tuple[str, TeacherConfig]] = {
    "resnet18-fer": ("resnet", TeacherConfig()),
    "vgg13-fer": ("vgg", TeacherConfig(widths=(64, 128, 256, 512), depths=(2, 2, 3, 3))),
    "resnet10-fer": ("resnet", TeacherConfig(stem_channels=32, widths=(32, 64, 128, 256), depths=(1, 1, 1, 1))),  # CPU-sized
}

ARCHITECTURES: tuple[str, ...] = tuple(sorted(PRESETS)) + tuple(sorted(TEACHERS))


def build_model(arch: str) -> nn.Module:
    """A freshly initialised network of a named architecture (seed torch first for a reproducible init)."""
    if arch in PRESETS:
        return EAN(PRESETS[arch])
    if arch in TEACHERS:
        family, config = TEACHERS[arch]
        return FAMILIES[family][0](config)
    raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")


def arch_of(model: nn.Module) -> str:
    """The zoo name of a network's architecture, or its family name for a shape no preset has (a pruned EAN)."""
    for name in ARCHITECTURES:
        if build_config(name) == model.config:
            return name
    return f"{family_of(model)}-custom"


def build_config(arch: str) -> object:
    return PRESETS[arch] if arch in PRESETS else TEACHERS[arch][1]


def family_of(model: nn.Module) -> str:
    return getattr(model, "family", "ean")


def from_config(family: str, config: dict) -> nn.Module:
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    model_cls, config_cls = FAMILIES[family]
    return model_cls(config_cls.from_dict(config))
