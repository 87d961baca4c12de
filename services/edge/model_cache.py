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
    def __init__(self, directory: Path, keep: int = 2) -> None:
        self.directory = directory
        self.keep = keep  # the serving version and the one before it, for rollback after a restart
        self.directory.mkdir(parents=True, exist_ok=True)

    def _blob(self, version: int) -> Path:
        return self.directory / f"{version}.onnx"

    def _manifest(self, version: int) -> Path:
        return self.directory / f"{version}.manifest.json"

    @property
    def _pointer(self) -> Path:
        return self.directory / "current"

    def store(self, manifest: Manifest, blob: bytes) -> None:
        """Keep a verified version and make it the one a restart serves."""
        _write_atomic(self._blob(manifest.version), blob)
        _write_atomic(self._manifest(manifest.version), manifest.to_json().encode())
        self.select(manifest.version)
        self._prune(manifest.version)

    def select(self, version: int) -> bool:
        """Point the cache at a version it holds (after an instant rollback); False if it is not here."""
        if not (self._blob(version).exists() and self._manifest(version).exists()):
            return False
        _write_atomic(self._pointer, str(version).encode())
        return True

    def _prune(self, current: int) -> None:
        versions = sorted((int(p.name.split(".")[0]) for p in self.directory.glob("*.manifest.json")), reverse=True)
        others = [v for v in versions if v != current]
        for version in others[self.keep - 1 :]:
            self._blob(version).unlink(missing_ok=True)
            self._manifest(version).unlink(missing_ok=True)

    def load_current(self, verifier: ManifestVerifier) -> tuple[Manifest, bytes] | None:
        """The selected version if it is present and still verifies; None (and a log line) otherwise."""
        try:
            version = int(self._pointer.read_text().strip())
            manifest = Manifest.from_json(self._manifest(version).read_bytes())
            blob = self._blob(version).read_bytes()
            verifier.verify(manifest)
            manifest.check_input()
            manifest.check_blob(blob)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:  # ManifestError is a ValueError
            log.error("model cache %s not used: %s", self.directory, exc)
            return None
        return manifest, blob

