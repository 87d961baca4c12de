"""Verified models on the node's disk, so a restart serves the last good model even while Redis is down.

Files are written atomically (temporary name, then rename) and re-verified on load: a cache is a
convenience, never a way around the signature check.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from edgefer.registry.manifest import Manifest
from edgefer.registry.signing import ManifestVerifier

log = logging.getLogger("edgefer.edge.cache")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ModelCache:
    """Files are named by the model's sha256 (`<sha256>.onnx`, `<sha256>.manifest.json`, `current` names one):
    version numbers can name other bytes after a registry lost its data, a content address cannot."""

    def __init__(self, directory: Path, keep: int = 2) -> None:
        self.directory = directory
        self.keep = keep  # the serving model and the one before it, for rollback after a restart
        self.directory.mkdir(parents=True, exist_ok=True)

    def _blob(self, sha256: str) -> Path:
        return self.directory / f"{sha256}.onnx"

    def _manifest(self, sha256: str) -> Path:
        return self.directory / f"{sha256}.manifest.json"

    @property
    def _pointer(self) -> Path:
        return self.directory / "current"

    def store(self, manifest: Manifest, blob: bytes) -> None:
        """Keep a verified version and make it the one a restart serves (select writes its manifest)."""
        _write_atomic(self._blob(manifest.sha256), blob)
        self.select(manifest)

    def select(self, manifest: Manifest) -> bool:
        """Make a held model the one a restart serves, under this manifest (after a rollback or a relabel);
        False if its bytes are not here."""
        if not self._blob(manifest.sha256).exists():
            return False
        _write_atomic(self._manifest(manifest.sha256), manifest.to_json().encode())
        _write_atomic(self._pointer, manifest.sha256.encode())
        self._prune(manifest.sha256)
        return True

    def writable(self) -> bool:
        """Whether the directory takes a small write now (a disk that was full or read-only may recover)."""
        probe = self.directory / ".probe"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            _write_atomic(probe, b"ok")
            probe.unlink()
        except OSError:
            return False
        return True

    def _prune(self, current: str) -> None:
        held = sorted(self.directory.glob("*.manifest.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        others = [p.name.split(".")[0] for p in held if p.name.split(".")[0] != current]
        for name in others[self.keep - 1 :]:
            self._blob(name).unlink(missing_ok=True)
            self._manifest(name).unlink(missing_ok=True)

    def load_current(self, verifier: ManifestVerifier | None) -> tuple[Manifest, bytes] | None:
        """The selected model if it is present and still verifies; None (and a log line) otherwise.

        Without a verifier (the node's public key file is unreadable) the bytes are checked against the
        cached manifest only: they were signature-checked when stored, and serving them beats serving nothing.
        """
        try:
            name = self._pointer.read_text().strip()
            manifest = Manifest.from_json(self._manifest(name).read_bytes())
            blob = self._blob(name).read_bytes()
            if verifier is not None:
                verifier.verify(manifest)
            manifest.check_input()
            manifest.check_blob(blob)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:  # ManifestError is a ValueError
            log.error("model cache %s not used: %s", self.directory, exc)
            return None
        return manifest, blob
