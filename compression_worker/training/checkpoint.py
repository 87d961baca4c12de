"""Checkpoint files: written atomically so that a run killed mid-write never leaves a broken resume point."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from compression_worker.model.ean import EAN, EANConfig


def save_atomic(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_model(model: EAN, path: Path, extra: dict[str, Any] | None = None) -> None:
    """A self-describing model file: architecture config plus weights (and optional metadata)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_atomic({"config": model.config.to_dict(), "state_dict": state, **(extra or {})}, path)


def load_model(path: str | Path) -> EAN:
    """Rebuild an EAN from a model or training checkpoint file; the error names the file when it is not one."""
    p = Path(path)
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise ValueError(f"{p}: no such checkpoint") from exc
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise ValueError(f"{p}: not a readable EAN checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or "config" not in payload or "state_dict" not in payload:
        raise ValueError(f"{p}: not an EAN checkpoint (missing config or state_dict)")
    model = EAN(EANConfig.from_dict(payload["config"]))
    model.load_state_dict(payload["state_dict"])
    return model.eval()
