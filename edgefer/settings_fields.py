"""A dataclass field is the one source of a setting: its default, type and help text, and from them its
command-line flag, its EDGEFER_* variable (edgefer/env_settings.py) and the check of a JSON setting (`from_json`).

A field's trailing comment is its help text. Field metadata may rename the flag (`flag`), restrict the
values (`choices`) or give the help text where a comment cannot (`doc`); `tuple[X, ...]` and `list[X]`
fields become repeatable flags (`--teacher a --teacher b`), `bool` fields `--x/--no-x`, and a field whose
type is itself a settings dataclass (OptimConfig.augment) contributes its own fields' flags. A recipe part
(edgefer/jobs/recipe.py) is added as a `section`: dotted flags (`--optim.augment.hflip-prob`) whose values
land at the same dotted path, and `from_json` builds the same nested objects from a job's JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import json
import re
import tokenize
import typing
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, fields
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
_FIELD_LINE = re.compile(r"^\s+(\w+)\s*:")


def option(
    default: Any = MISSING,
    *,
    flag: str | None = None,
    choices: Iterable[str] | None = None,
    doc: str | None = None,
    default_factory: Any = MISSING,
) -> Any:
    """A dataclass field with flag metadata, only where the flag's name, its choices or a help text too long
    for a trailing comment (`doc`) are needed."""
    metadata = {
        key: value
        for key, value in (("flag", flag), ("choices", tuple(choices) if choices else None), ("help", doc))
        if value is not None
    }
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


@cache
def setting_docs(cls: type) -> dict[str, str]:
    """Field name -> its help text: metadata `help`, else its trailing comment, over the class and its bases."""
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
    if dataclasses.is_dataclass(cls):
        docs.update({f.name: f.metadata["help"] for f in fields(cls) if "help" in f.metadata})
    return docs


def field_default(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else MISSING


def flag_of(f: dataclasses.Field) -> str:
    return "--" + f.metadata.get("flag", f.name.replace("_", "-"))


def _kind(f: dataclasses.Field) -> str:
    return str(f.type).replace("typing.", "")


@cache
def _type_hints(owner: type) -> dict[str, Any]:
    """The resolved annotations of a class, once (every flag and every namespace read asks for them)."""
    try:
        return typing.get_type_hints(owner)
    except NameError:  # an annotation only importable for type checkers: no settings dataclass to find
        return {}


def _nested(owner: type, f: dataclasses.Field) -> type | None:
    """The settings dataclass a field holds (OptimConfig.augment -> AugmentConfig), if it holds one."""
    hint = _type_hints(owner).get(f.name)
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def _element(kind: str) -> str:
    """`tuple[Path, ...]` -> `Path`, `list[str] | None` -> `str`."""
    match = re.search(r"(?:tuple|list)\[(\w+)", kind)
    return match.group(1) if match else "str"


def _repeated(kind: str) -> bool:
    return kind.startswith(("tuple[", "list[")) and ("..." in kind or kind.startswith("list["))


def parse_value(name: str, raw: str, kind: str) -> Any:
    """Convert a flag or environment string to the field's type, naming the setting when it cannot."""
    base = kind.replace(" | None", "").strip()
    try:
        if base == "int":
            return int(raw)
        if base == "float":
            return float(raw)
        if base == "bool":
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes")
        if base == "Path":
            return Path(raw) if raw else None
        if base == "dict":
            value = json.loads(raw)
            if not isinstance(value, dict):
                raise ValueError(raw)
            return value
        return raw
    except ValueError as exc:
        raise ValueError(f"setting {name}: cannot read {raw!r} as {kind}") from exc


def value_matches(kind: str, value: object) -> bool:
    """Whether a JSON value fits a field's type (job settings arrive as JSON)."""
    if value is None:
        return "None" in kind
    if _repeated(kind):
        return isinstance(value, list) and all(value_matches(_element(kind), item) for item in value)
    if kind.startswith("tuple["):
        return isinstance(value, list) and len(value) == kind.count(",") + 1 and all(
            value_matches(_element(kind), item) for item in value)
    base = kind.replace(" | None", "").strip()
    if base == "dict":
        return isinstance(value, dict)
    if base == "bool":
        return isinstance(value, bool)
    if base == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if base == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, str)


def env_name(field_name: str) -> str:
    """The environment variable of a setting: EDGEFER_ and its name in capitals."""
    return f"EDGEFER_{field_name.upper()}"


def add_dataclass_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    defaults: Mapping[str, Any] | None = None,
    exclude: Iterable[str] = (),
    env: bool = False,
    omit_unset: bool = False,
    section: str = "",
    dest_root: str = "",
    base: Any = None,
    aliases: bool = True,
) -> None:
    """One flag per field of `cls` (and of the settings dataclasses it holds).

    `defaults` overrides field defaults by field name (a stage's own epochs, a value read from the environment);
    `env` names the EDGEFER_* variable in the help; `omit_unset` leaves flags that were not given out of the
    namespace (a job submitted with a few settings stays a job with a few settings).

    With a `section` (a recipe part: `optim`, `distill`, ...) the flags are dotted (`--distill.temperature`,
    `--optim.augment.hflip-prob`), keep their short undotted name as an alias where it is free (`--temperature`,
    the flag of earlier releases; `aliases=False`: none), and land in the namespace as `dest_root` + the dotted path. `base` is the
    instance whose values are the defaults (a recipe's preset), else the class's own.
    """
    defaults = dict(defaults or {})
    skip = set(exclude)
    docs = setting_docs(cls)
    taken = getattr(parser, "_option_string_actions", {})
    for f in fields(cls):
        if f.name in skip:
            continue
        path = f"{section}.{f.name}" if section else f.name
        preset = getattr(base, f.name) if base is not None else field_default(f)
        if nested := _nested(cls, f):
            add_dataclass_arguments(parser, nested, defaults=defaults, exclude=skip, env=env, omit_unset=omit_unset,
                                    section=path if section else "", dest_root=dest_root, base=preset, aliases=aliases)
            continue
        default = defaults.get(f.name, preset)
        shown = "unset" if default in ("", None, ()) else default
        suffix = f"; ${env_name(f.name)}" if env else ""
        note = "required" if default is MISSING else f"default: {shown}{suffix}"
        flag = flag_of(f)
        flags = [flag]
        if section:
            dotted = f"--{section}.{flag[2:]}"
            free = aliases and flag not in taken and ("--no-" + flag[2:]) not in taken
            flags = [dotted] + ([flag] if free else [])
        add_field_flag(parser, f, flags, dest_root + path, f"{docs.get(f.name, '')} ({note})".lstrip(), default,
                       omit_unset)


def add_field_flag(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    f: dataclasses.Field,
    flags: list[str],
    dest: str,
    text: str,
    default: Any,
    omit_unset: bool = False,
) -> None:
    """The flag(s) of one field, typed, checked and repeatable as its annotation says."""
    kind = _kind(f)
    kwargs: dict[str, Any] = {"dest": dest, "help": text.replace("%", "%%")}
    if kind != "bool" and "choices" not in f.metadata:
        kwargs["metavar"] = flag_of(f)[2:].replace("-", "_").upper()
    if default is MISSING:
        kwargs["required"] = True
    else:
        kwargs["default"] = argparse.SUPPRESS if omit_unset else default
    if "choices" in f.metadata:
        kwargs["choices"] = f.metadata["choices"]
    if kind == "bool":
        parser.add_argument(*flags, action=argparse.BooleanOptionalAction, **kwargs)
    elif _repeated(kind):
        if not omit_unset and default is not MISSING:
            kwargs["default"] = None  # argparse appends to a given default; None -> the field's default
        parser.add_argument(*flags, action="append", type=_converter(f.name, _element(kind)), **kwargs)
    elif kind.startswith("tuple["):
        parser.add_argument(*flags, nargs=kind.count(",") + 1, type=_converter(f.name, _element(kind)), **kwargs)
    else:
        parser.add_argument(*flags, type=_converter(f.name, kind), **kwargs)


def _converter(name: str, kind: str):
    def convert(raw: str) -> Any:
        try:
            return parse_value(name, raw, kind)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return convert


def dataclass_from_namespace(cls: type[T], args: argparse.Namespace, section: str = "", **overrides: Any) -> T:
    """The settings object the flags of `add_dataclass_arguments` describe (nested settings included); `section`
    as given there."""
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        dest = f"{section}.{f.name}" if section else f.name
        if f.name in overrides:
            values[f.name] = overrides[f.name]
        elif nested := _nested(cls, f):
            values[f.name] = dataclass_from_namespace(nested, args, dest if section else "")
        elif hasattr(args, dest):
            value = getattr(args, dest)
            kind = _kind(f)
            if _repeated(kind):
                value = (
                    field_default(f) if value is None else (tuple(value) if kind.startswith("tuple[") else list(value))
                )
            elif kind.startswith("tuple[") and isinstance(value, list):
                value = tuple(value)
            values[f.name] = value
    return cls(**values)


def _from_json_value(kind: str, value: Any) -> Any:
    """A JSON value as the field's Python type (lists to tuples, strings to paths)."""
    if value is None:
        return None
    if kind.startswith("tuple["):
        element = _element(kind)
        return tuple(Path(v) if element == "Path" else v for v in value)
    if kind.replace(" | None", "").strip() == "Path":
        return Path(value)
    return value


def check_json_value(name: str, f: dataclasses.Field, value: object, what: str) -> None:
    """One JSON value against its field's type and choices; ValueError naming the setting as `name`."""
    kind = _kind(f)
    if value is not None and not value_matches(kind, value):
        raise ValueError(f"{what} setting {name}: {value!r} is not {kind}")
    if value is not None and "choices" in f.metadata and value not in f.metadata["choices"]:
        raise ValueError(f"unknown {name} {value!r}; use {' or '.join(f.metadata['choices'])}")


def from_json(cls: type[T], data: object, what: str, section: str = "", base: Any = None) -> T:
    """A settings object from a JSON object that nests like the dataclass (`{"distill": {"rounds": 2}}`); the
    values it leaves out come from `base` (a preset) or the class defaults. ValueError names the first unknown,
    mistyped or refused setting by its dotted path."""
    if not isinstance(data, dict):
        raise ValueError(f"{what} {section} must be a JSON object" if section else f"{what} must be a JSON object")
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(f"{section}.{k}" if section else k for k in set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown {what} settings: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, value in data.items():
        f, path = known[name], f"{section}.{name}" if section else name
        preset = getattr(base, name) if base is not None else field_default(f)
        if nested := _nested(cls, f):
            values[name] = from_json(nested, value, what, path, None if preset is MISSING else preset)
        else:
            check_json_value(path, f, value, what)
            values[name] = _from_json_value(_kind(f), value)
    try:
        return dataclasses.replace(base, **values) if base is not None else cls(**values)
    except ValueError as exc:  # the class refused a value: at the top, its own error (a ProfileError...) as it is
        if not section:
            raise
        raise ValueError(f"{what} setting {section}: {exc}") from exc
    except TypeError as exc:  # a required field left out
        raise ValueError(f"{what}{' ' + section if section else ''}: {exc}") from exc
