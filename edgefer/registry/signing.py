"""Ed25519 signatures over manifests: the worker holds the private key, nodes only the public key."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgefer.registry.manifest import Manifest, ManifestError


class KeyFileError(ValueError):
    """A key file that is missing or not an Ed25519 PEM key; the message names the file."""


def key_id(public: Ed25519PublicKey) -> str:
    """A short fingerprint, so a manifest says which key signed it (useful when keys rotate)."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(private_path: Path, public_path: Path) -> str:
    """Write a new key pair (private key readable by its owner only); returns the key id."""
    private = Ed25519PrivateKey.generate()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    private_path.touch(mode=0o600)
    private_path.write_bytes(pem)
    public_path.write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return key_id(private.public_key())


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key file ({exc.strerror})") from exc


class ManifestSigner:
    def __init__(self, private_key_path: Path) -> None:
        pem = _read(private_key_path)
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except ValueError as exc:
            raise KeyFileError(f"{private_key_path}: not a PEM private key ({exc})") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"{private_key_path}: not an Ed25519 key")
        self._key = key
        self.key_id = key_id(key.public_key())

    def sign(self, manifest: Manifest) -> Manifest:
        unsigned = replace(manifest, key_id=self.key_id, signature="")
        return unsigned.with_signature(self._key.sign(unsigned.signed_bytes()))


class ManifestVerifier:
    def __init__(self, public_key_path: Path) -> None:
        pem = _read(public_key_path)
        try:
            key = serialization.load_pem_public_key(pem)
        except ValueError as exc:
            raise KeyFileError(f"{public_key_path}: not a PEM public key ({exc})") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError(f"{public_key_path}: not an Ed25519 key")
        self._key = key
        self.key_id = key_id(key)

    def verify(self, manifest: Manifest) -> None:
        """Raises ManifestError unless the manifest carries a valid signature by this key."""
        if not manifest.signature:
            raise ManifestError(f"version {manifest.version}: manifest is unsigned")
        try:
            self._key.verify(manifest.signature_bytes(), manifest.signed_bytes())
        except InvalidSignature as exc:
            raise ManifestError(
                f"version {manifest.version}: bad signature (signed by key {manifest.key_id or '?'}, node trusts {self.key_id})"
            ) from exc


class TrustedKey:
    """A node's public key file, read when first needed and tried again while it cannot be read: a node
    whose key file is missing keeps serving its cache and follows the registry again once the file is back."""

    def __init__(self, public_key_path: Path) -> None:
        self.path = public_key_path
        self._verifier: ManifestVerifier | None = None
        self._seen = self._stat()

    def _stat(self) -> tuple[float, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime, stat.st_size

    def changed(self) -> bool:
        """Whether the key file appeared, went or was rewritten since the last call (a cheap stat): a node
        refusing versions for want of its key looks again as soon as the file is restored."""
        now = self._stat()
        changed, self._seen = now != self._seen, now
        return changed

    def verifier(self) -> ManifestVerifier:
        """Raises KeyFileError (naming the file) while the key cannot be read."""
        if self._verifier is None:
            self._verifier = ManifestVerifier(self.path)
        return self._verifier

    def verifier_or_none(self) -> ManifestVerifier | None:
        try:
            return self.verifier()
        except KeyFileError:
            return None
