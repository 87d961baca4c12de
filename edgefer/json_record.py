"""One way to store a dataclass as a JSON object (in Redis or in a file) and read it back.

Every record the registry, the worker and the rollout controller share is read by processes of other
releases: a reader ignores fields a later release added, so an older node keeps following, and anything
else that is wrong (not JSON, not an object, a field missing or of the wrong type) becomes the record's
own error naming the record, never a bare TypeError deep inside a caller."""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, fields
from typing import Any, ClassVar, Self


class JsonRecord:
    """Mixin for dataclasses: `to_json` (sorted keys, so equal records are equal bytes) and the tolerant
    `from_json`/`from_dict`; a subclass names itself and its error and may add `check` for field types."""

    record_name: ClassVar[str]
    record_error: ClassVar[type[Exception]]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)  # type: ignore[call-overload]

    @classmethod
    def from_json(cls, raw: str | bytes) -> Self:
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise cls.record_error(f"unreadable {cls.record_name} ({exc})") from exc
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: object) -> Self:
        try:
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
            record = cls.build(data)
            record.check()
        except cls.record_error:
            raise
        except (ValueError, TypeError, AttributeError) as exc:
            raise cls.record_error(f"unreadable {cls.record_name} ({exc})") from exc
        return record

    @classmethod
    def build(cls, data: dict[str, Any]) -> Self:
        """The record from the fields this release knows (a subclass with nested records overrides it)."""
        given = known_fields(cls, data)
        missing = [f.name for f in fields(cls) if f.name not in given and f.default is MISSING
                   and f.default_factory is MISSING and f.init]
        if missing:
            raise TypeError(f"missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
        return cls(**given)

    def check(self) -> None:
        """Raise TypeError for a field a reader cannot rely on (none checked by default)."""


def known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The entries of `data` that are fields of dataclass `cls`."""
    known = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in known}
