"""The lineage of the fleet's models: every teacher and float student a worker trained, as a record.

The files live on the worker's volume, addressed by sha256 (compression_worker/lineage_store.py); their
records are also indexed in Redis so that `edgefer-jobs lineage` lists them from anywhere, and a published
version's manifest names the artefacts it came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import redis

from edgefer.json_record import JsonRecord
from edgefer.registry.keys import FleetKeys

KINDS = ("teacher", "student")


class LineageError(ValueError):
    """An artefact that is missing, altered or unreadable; the message names it."""


@dataclass(frozen=True)
class Artefact(JsonRecord):
    record_name: ClassVar[str] = "lineage record"
    record_error: ClassVar[type[Exception]] = LineageError

    sha256: str  # of the file's bytes: the artefact's address
    kind: str  # teacher (round 0 of a job, or added by an operator) | student (a job's distilled float model)
    arch: str  # the zoo architecture, or "onnx" for an exported graph
    file: str  # the file's name in the lineage folder: <sha256>.pt or <sha256>.onnx
    data: str  # identity of the data it trained on (DataConfig.identity)
    split: str  # the rule that drew the held-back faces it never trained on (DataConfig.split_rule)
    held_back_accuracy: float  # top-1 on those held-back faces
    parent: str | None = None  # sha256 of the artefact it learnt from
    job_id: str = ""  # the job that made it ("" for one an operator added)
    created: str = ""
    recipe: str = ""  # a student's: sha256 of its teacher and training settings (the same recipe is not rerun)


class LineageIndex:
    """The Redis copy of the records: what `edgefer-jobs lineage` reads (the worker's volume is the source)."""

    def __init__(self, client: redis.Redis, keys: FleetKeys | None = None) -> None:
        self.client = client
        self.key = (keys or FleetKeys()).lineage

    def put(self, *artefacts: Artefact) -> None:
        if artefacts:
            self.client.hset(self.key, mapping={a.sha256: a.to_json() for a in artefacts})

    def all(self) -> list[Artefact]:
        """Every record, newest first; a record that cannot be read is left out."""
        records = []
        for raw in self.client.hvals(self.key):
            try:
                records.append(Artefact.from_json(raw))
            except LineageError:
                continue
        return sorted(records, key=lambda a: a.created, reverse=True)


def format_lineage(artefacts: list[Artefact]) -> str:
    lines = [
        f"{'sha256':<12} {'kind':<7} {'arch':<13} {'held back':>9} {'parent':<12} {'job':<14} {'data':<12} created"
    ]
    for a in artefacts:
        lines.append(
            f"{a.sha256[:12]:<12} {a.kind:<7} {a.arch:<13} {100 * a.held_back_accuracy:>8.2f}% "
            f"{(a.parent or '-')[:12]:<12} {a.job_id or '-':<14} {a.data[:12]:<12} {a.created}"
        )
    return "\n".join(lines)
