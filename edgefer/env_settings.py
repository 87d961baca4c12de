"""Typed settings objects for every EdgeFER process: field defaults, then EDGEFER_* variables, then flags.

A settings class is a frozen dataclass that inherits `EnvSettings`; each field becomes the variable
EDGEFER_<FIELD> and the flag --<field-with-dashes>, converted to the field's type, and a value that
cannot be converted is refused with the setting's name.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import fields
from pathlib import Path
from typing import Self


class EnvSettings:
    @classmethod
    def from_env(cls) -> Self:
        values: dict = {}
        for f in fields(cls):  # type: ignore[arg-type]
            raw = os.environ.get(f"EDGEFER_{f.name.upper()}")
            if raw is not None:
                values[f.name] = parse_setting(f.name, raw, str(f.type))
        return cls(**values)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One flag per field, its default taken from the environment."""
        base = cls.from_env()
        for f in fields(cls):  # type: ignore[arg-type]
            flag = "--" + f.name.replace("_", "-")
            if f.type == "bool":
                parser.add_argument(flag, default=getattr(base, f.name), action=argparse.BooleanOptionalAction)
            else:
                parser.add_argument(flag, default=getattr(base, f.name), type=lambda raw, f=f: parse_setting(f.name, raw, str(f.type)))

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> Self:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})  # type: ignore[arg-type]

    @classmethod
    def from_args(cls, argv: list[str] | None = None, prog: str | None = None, description: str | None = None) -> Self:
        parser = argparse.ArgumentParser(prog=prog, description=description)
        cls.add_arguments(parser)
        return cls.from_namespace(parser.parse_args(argv))


def parse_setting(name: str, raw: str, kind: str):
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
