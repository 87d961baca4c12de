"""The worker's lineage store: teachers and float students kept once, addressed by sha256, verified on use.

Layout of the folder (a persistent volume in k3s):
    <sha256>.pt | <sha256>.onnx    the artefact's bytes
    <sha256>.json                  its record (edgefer/jobs/lineage.py), written after the bytes
    views/<key>/                   a teacher's stored augmented views of a job's faces (distill mode views), kept
                                   for the next job with that teacher; the most recently used few only
A record is only trusted with its bytes: `path` re-hashes the file and refuses one that changed, so a job
never starts from an altered or half-copied teacher.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from edgefer.jobs.lineage import KINDS, Artefact, LineageError, LineageIndex
from edgefer.timestamps import utc_now_iso

log = logging.getLogger("edgefer.worker.lineage")
VIEW_SETS_KEPT = 2


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def adopt_shipped_teachers(store: LineageStore, folder: Path) -> list[Artefact]:
    """Add the teachers that ship with the project (ONNX graphs with their model cards, models/teachers/) to the
    lineage, so `teacher=best` finds them on a fresh worker. A card says what the teacher trained on and how well
    it did on the faces it never saw (its mirror-averaged val accuracy: the graph averages each face with its
    mirror); a graph without a readable card, or whose bytes differ from the card's, is skipped by name."""
    adopted = []
    for card_path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        graph = card_path.with_suffix(".onnx")
        try:
            card = json.loads(card_path.read_text())
            training = card["training"]
            if not graph.exists() or file_sha256(graph) != card["file_sha256"]:
                raise LineageError(f"{graph} is missing or is not the file its card describes")
            adopted.append(store.add(
                graph, kind="teacher", arch="onnx", data=training["data_identity"], split=training["split"],
                held_back_accuracy=float(training["best_val_acc_hflip"]), job_id=f"shipped:{card['name']}",
            ))
        except (OSError, ValueError, KeyError, TypeError) as exc:  # LineageError is a ValueError
            log.warning("shipped teacher %s not added to the lineage: %s", card_path, exc)
    return adopted


def trained_within(artefact: Artefact, data: str, split: str) -> bool:
    """Whether a model never trained on the held-back faces of `data` under `split`: it trained on the same
    data, or on some of the sources merged into it (each source is split by the same rule), drawn the same way."""
    return artefact.split == split and set(artefact.data.split("+")) <= set(data.split("+"))


class LineageStore:
    def __init__(self, root: Path, index: LineageIndex | None = None) -> None:
        self.root = root
        self.index = index

    def add(
        self,
        source: Path,
        *,
        kind: str,
        arch: str,
        data: str,
        split: str,
        held_back_accuracy: float,
        parent: str | None = None,
        job_id: str = "",
        recipe: str = "",
    ) -> Artefact:
        """Keep `source` (once: the same bytes added again return the stored record) and index its record."""
        if kind not in KINDS:
            raise LineageError(f"unknown artefact kind {kind!r}; use {' or '.join(KINDS)}")
        sha = file_sha256(source)
        existing = self.record(sha)
        if existing is not None:
            self._index(existing)
            return existing
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"{sha}{source.suffix or '.pt'}"
        tmp = self.root / f".{name}.tmp"
        shutil.copyfile(source, tmp)
        os.replace(tmp, self.root / name)
        artefact = Artefact(
            sha, kind, arch, name, data, split, float(held_back_accuracy), parent, job_id, utc_now_iso(), recipe
        )
        record_tmp = self.root / f".{sha}.json.tmp"
        record_tmp.write_text(artefact.to_json())
        os.replace(record_tmp, self.root / f"{sha}.json")
        self._index(artefact)
        return artefact

    def record(self, sha256: str) -> Artefact | None:
        path = self.root / f"{sha256}.json"
        return Artefact.from_json(path.read_text()) if path.exists() else None

    def records(self) -> list[Artefact]:
        found = []
        for path in sorted(self.root.glob("*.json")) if self.root.exists() else []:
            try:
                found.append(Artefact.from_json(path.read_text()))
            except LineageError:
                continue
        return found

    def find(self, sha256: str) -> Artefact:
        """The record of a full sha256 or a unique prefix of 8+ hex digits."""
        return self.record(sha256) or self._unique_prefix(sha256)

    def path(self, sha256: str) -> Path:
        """The artefact's file, after checking its bytes still hash to its address."""
        artefact = self.find(sha256)
        path = self.root / artefact.file
        if not path.exists():
            raise LineageError(f"lineage artefact {artefact.sha256[:12]}: its file {path} is missing")
        if file_sha256(path) != artefact.sha256:
            raise LineageError(f"lineage artefact {artefact.sha256[:12]}: {path} no longer has the stored bytes")
        return path

    def best(self, data: str, split: str, count: int = 1) -> list[Artefact]:
        """The `count` most accurate stored models (teachers, or students that became one) that never trained on
        the held-back faces of `data` under `split` (their accuracies were measured on comparable faces), best first."""
        usable = [a for a in self.records() if trained_within(a, data, split)]
        return sorted(usable, key=lambda a: (a.held_back_accuracy, a.created, a.sha256), reverse=True)[:count]

    def student(self, recipe: str, data: str, split: str) -> Artefact | None:
        """A student an earlier job distilled with the same teacher and settings on the same data and split."""
        found = [
            a
            for a in self.records()
            if a.kind == "student" and a.recipe == recipe and a.data == data and a.split == split
        ]
        return max(found, key=lambda a: a.created, default=None)

    def reindex(self) -> int:
        """Copy every record to Redis (a Redis that lost its data learns the lineage again)."""
        records = self.records()
        if self.index is not None:
            self.index.put(*records)
        return len(records)

    def views_folder(self, key: str, keep: int = VIEW_SETS_KEPT) -> Path:
        """The folder for the views keyed `key` (made by compression_worker/distill/views.py, which checks what
        they were made for), marked as just used; older view sets beyond the `keep` most recent are removed (about
        60 MB a view: 0.5 GB a set of 8 on full FER2013)."""
        folder = self.root / "views" / key
        folder.mkdir(parents=True, exist_ok=True)
        os.utime(folder)
        sets = sorted((p for p in folder.parent.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in sets[keep:]:
            log.info("removing the stored views %s (kept: the %d most recently used)", old.name, keep)
            shutil.rmtree(old, ignore_errors=True)
        return folder

    def _unique_prefix(self, prefix: str) -> Artefact:
        matches = [a for a in self.records() if a.sha256.startswith(prefix)] if len(prefix) >= 8 else []
        if len(matches) != 1:
            raise LineageError(
                f"no single lineage artefact with sha256 {prefix!r} in {self.root}"
                + (f" ({len(matches)} match)" if matches else "")
            )
        return matches[0]

    def _index(self, artefact: Artefact) -> None:
        if self.index is not None:
            self.index.put(artefact)
