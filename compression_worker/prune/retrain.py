"""Local channel retraining: train first only what pruning touched, so the rest keeps what distillation taught.

"Touched" is every module whose parameter shapes changed: the layers that lost output channels and
the layers that read them. Everything else is frozen: no gradients, and BatchNorm running statistics
held (momentum 0), so its tensors stay bit-identical.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


def changed_modules(before: nn.Module, after: nn.Module) -> set[str]:
    """Names of the leaf modules whose parameters changed shape between two versions of a network."""
    old = {name: tuple(p.shape) for name, p in before.named_parameters()}
    return {name.rsplit(".", 1)[0] for name, p in after.named_parameters() if old.get(name) != tuple(p.shape)}


@contextmanager
def only_training(model: nn.Module, module_names: set[str]) -> Iterator[list[str]]:
    """Freeze every leaf module not named; yields the trainable parameter names and restores on exit."""
    frozen_bn: list[tuple[nn.modules.batchnorm._BatchNorm, float | None]] = []
    trainable = []
    saved = {name: p.requires_grad for name, p in model.named_parameters()}
    for name, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue
        train_it = name in module_names
        for pname, p in module.named_parameters(recurse=False):
            p.requires_grad_(train_it)
            if train_it:
                trainable.append(f"{name}.{pname}")
        if not train_it and isinstance(module, nn.modules.batchnorm._BatchNorm):
            frozen_bn.append((module, module.momentum))
            module.momentum = 0.0
    try:
        yield trainable
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(saved[name])
        for module, momentum in frozen_bn:
            module.momentum = momentum
