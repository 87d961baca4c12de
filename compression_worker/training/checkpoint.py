"""Checkpoint files: written atomically so that a run killed mid-write never leaves a broken resume point."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compression_worker.model.ean import EAN
from compression_worker.model.zoo import family_of, from_config


def save_atomic(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_model(model: nn.Module, path: Path, extra: dict[str, Any] | None = None) -> None:
    """A self-describing model file: family, architecture config plus weights (and optional metadata)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"family": family_of(model), "config": model.config.to_dict(), "state_dict": state, **(extra or {})}
    save_atomic(payload, path)


def load_model(path: str | Path) -> EAN:
    """Rebuild an EAN (what the pruning and export stages work on); a teacher file is refused by name."""
    model = load_network(path)
    if not isinstance(model, EAN):
        raise ValueError(f"{path}: a {family_of(model)} teacher checkpoint, not an EAN")
    return model


def load_network(path: str | Path) -> nn.Module:
    """Rebuild any zoo network from a model or training checkpoint file; the error names the file when it is not one."""
    p = Path(path)
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise ValueError(f"{p}: no such checkpoint") from exc
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise ValueError(f"{p}: not a readable model checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or "config" not in payload or "state_dict" not in payload:
        raise ValueError(f"{p}: not a model checkpoint (missing config or state_dict)")
    model = from_config(payload.get("family", "ean"), payload["config"])
    model.load_state_dict(payload["state_dict"])
    return model.eval()
