"""Typed settings objects for every EdgeFER process: field defaults, then EDGEFER_* variables, then flags.

A settings class is a frozen dataclass that inherits `EnvSettings`; each field becomes the variable
EDGEFER_<FIELD> and the flag --<field-with-dashes>, converted to the field's type, and a value that
cannot be converted is refused with the setting's name. A field's trailing comment is its help text:
`--help` shows it with the default and the variable, so the three cannot drift apart.
"""

from __future__ import annotations

import argparse
import inspect
import io
import os
import re
import tokenize
from dataclasses import fields
from functools import cache
from pathlib import Path
from typing import Self

_FIELD_LINE = re.compile(r"^\s+(\w+)\s*:")


@cache
def setting_docs(cls: type) -> dict[str, str]:
    """Field name -> its trailing comment, over the class and the settings classes it inherits."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        lines = source.splitlines()
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.COMMENT and (match := _FIELD_LINE.match(lines[token.start[0] - 1])):
                docs[match.group(1)] = token.string.lstrip("# ").strip()
    return docs


def env_name(field_name: str) -> str:
    return f"EDGEFER_{field_name.upper()}"


class EnvSettings:
    @classmethod
    def from_env(cls) -> Self:
        values: dict = {}
        for f in fields(cls):  # type: ignore[arg-type]
            raw = os.environ.get(env_name(f.name))
            if raw is not None:
                values[f.name] = parse_setting(f.name, raw, str(f.type))
        return cls(**values)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One flag per field, its default taken from the environment, its help from the field's comment."""
        base = cls.from_env()
        docs = setting_docs(cls)
        for f in fields(cls):  # type: ignore[arg-type]
            flag = "--" + f.name.replace("_", "-")
            default = getattr(base, f.name)
            shown = default if default not in ("", None) else "unset"
            text = f"{docs.get(f.name, '')} (default: {shown}; ${env_name(f.name)})".replace("%", "%%").lstrip()
            if f.type == "bool":
                parser.add_argument(flag, default=default, action=argparse.BooleanOptionalAction, help=text)
            else:
                parser.add_argument(flag, default=default, help=text,
                                    type=lambda raw, f=f: parse_setting(f.name, raw, str(f.type)))

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
