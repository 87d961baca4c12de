"""Typed settings objects for every EdgeFER process: field defaults, then EDGEFER_* variables, then flags.

A settings class is a frozen dataclass that inherits `EnvSettings`; each field becomes the variable
EDGEFER_<FIELD> and the flag --<field-with-dashes>, converted to the field's type, and a value that
cannot be converted is refused with the setting's name. A field's trailing comment is its help text:
`--help` shows it with the default and the variable, so the three cannot drift apart (edgefer/settings_fields.py
generates the flags, as it does for the worker's training settings and the job spec).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import fields
from typing import Self

from edgefer.settings_fields import (
    add_dataclass_arguments,
    dataclass_from_namespace,
    env_name,
    parse_value,
    setting_docs,
)

__all__ = ["EnvSettings", "env_name", "resolve_threads", "setting_docs"]


def resolve_threads(name: str, threads: int) -> int:
    """A thread setting: 0 means all cores, the same in every process; negative is refused."""
    if threads < 0:
        raise ValueError(f"setting {name} must be >= 0 (0: all cores), got {threads}")
    return threads or os.cpu_count() or 1


class EnvSettings:
    @classmethod
    def env_values(cls) -> dict:
        """The fields given by EDGEFER_* variables, converted to their types."""
        values: dict = {}
        for f in fields(cls):  # type: ignore[arg-type]
            raw = os.environ.get(env_name(f.name))
            if raw is not None:
                values[f.name] = parse_value(f.name, raw, str(f.type))
        return values

    @classmethod
    def from_env(cls) -> Self:
        return cls(**cls.env_values())

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One flag per field, its default taken from the environment, its help from the field's comment."""
        add_dataclass_arguments(parser, cls, defaults=cls.env_values(), env=True)

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> Self:
        return dataclass_from_namespace(cls, args)

    @classmethod
    def from_args(cls, argv: list[str] | None = None, prog: str | None = None, description: str | None = None) -> Self:
        parser = argparse.ArgumentParser(prog=prog, description=description)
        cls.add_arguments(parser)
        return cls.from_namespace(parser.parse_args(argv))
