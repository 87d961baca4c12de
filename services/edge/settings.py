"""Edge node settings: one typed object, from EDGEFER_* environment variables, overridden by flags."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields
from pathlib import Path


def _env(name: str, default: str) -> str:
    return os.environ.get(f"EDGEFER_{name.upper()}", default)


@dataclass(frozen=True)
class EdgeSettings:
    host: str = "0.0.0.0"
    port: int = 50051
    metrics_port: int = 9100  # 0 disables the metrics endpoint
    model_path: Path = Path("models/ean-baseline.onnx")
    model_version: str = ""  # default: the model file's stem
    intra_op_threads: int = os.cpu_count() or 1
    max_message_bytes: int = 4 * 1024 * 1024
    max_concurrent_streams: int = 64
    drop_stale_frames: bool = True
    batch_across_streams: bool = False  # run faces of concurrent requests as one batch
    batch_max_faces: int = 64
    batch_max_wait_ms: float = 2.0
    detect_width: int = 320
    grace_seconds: float = 5.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # set for mutual TLS

    @classmethod
    def from_env(cls) -> EdgeSettings:
        values: dict = {}
        for f in fields(cls):
            raw = os.environ.get(f"EDGEFER_{f.name.upper()}")
            if raw is not None:
                values[f.name] = _parse(f.name, raw, f.type)
        return cls(**values)

    @classmethod
    def from_args(cls, argv: list[str] | None = None) -> EdgeSettings:
        base = cls.from_env()
        parser = argparse.ArgumentParser(prog="edgefer-edge", description="EdgeFER edge inference node")
        for f in fields(cls):
            flag = "--" + f.name.replace("_", "-")
            if f.type == "bool":
                parser.add_argument(flag, default=getattr(base, f.name), action=argparse.BooleanOptionalAction)
            else:
                parser.add_argument(flag, default=getattr(base, f.name), type=lambda raw, f=f: _parse(f.name, raw, f.type))
        return cls(**vars(parser.parse_args(argv)))


def _parse(name: str, raw: str, kind: str):
    """Convert an environment or flag string to the field's type, naming the setting when it cannot."""
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes")
        if kind.startswith("Path"):
            return Path(raw) if raw else None
        return raw
    except ValueError as exc:
        raise ValueError(f"setting {name}: cannot read {raw!r} as {kind}") from exc
