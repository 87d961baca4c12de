"""The manifest of one published model version, and the canonical bytes its signature covers."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import ClassVar

from edgefer.json_record import JsonRecord
from edgefer.labels import CLASSES, FACE_SIZE
from edgefer.timestamps import utc_now_iso

# What every node serves: raw 0..255 gray faces in, 7 logits out (see edgefer.onnx_model).
EXPECTED_INPUT = {"name": "faces", "dtype": "float32", "shape": ["N", 1, FACE_SIZE, FACE_SIZE]}


class ManifestError(ValueError):
    """A manifest or a blob that must not be served; the message says which check failed."""


@dataclass(frozen=True)
class Manifest(JsonRecord):
    """What a version is: its signed identity (fleet, registry epoch, version) and its bytes (sha256, size)."""

    record_name: ClassVar[str] = "manifest"
    record_error: ClassVar[type[Exception]] = ManifestError

    version: int
    name: str
    sha256: str
    size: int
    input: dict
    classes: list[str] = field(default_factory=lambda: list(CLASSES))
    metrics: dict = field(default_factory=dict)
    created: str = ""
    parent: int | None = None
    fleet: str = ""  # the fleet it was published to
    epoch: str = ""  # the registry it was published in (a new epoch after Redis lost its data)
    key_id: str = ""
    lineage: dict = field(default_factory=dict)  # the artefacts it came from: teacher, student sha256, data, split
    signature: str = ""  # base64 Ed25519 over signed_bytes()

    def signed_bytes(self) -> bytes:
        """Canonical JSON of every field but the signature: what the worker signs and nodes verify. An empty
        lineage is left out, so manifests signed before the field existed still verify."""
        body = asdict(self)
        body.pop("signature")
        if not body["lineage"]:
            body.pop("lineage")
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def with_signature(self, signature: bytes) -> Manifest:
        return replace(self, signature=base64.b64encode(signature).decode())

    def signature_bytes(self) -> bytes:
        try:
            return base64.b64decode(self.signature, validate=True)
        except ValueError as exc:
            raise ManifestError(f"version {self.version}: signature is not base64") from exc

    def check_blob(self, blob: bytes) -> None:
        """Size and sha256 of the fetched bytes must be the ones that were signed."""
        if len(blob) != self.size:
            raise ManifestError(f"version {self.version}: blob is {len(blob)} bytes, manifest says {self.size}")
        digest = hashlib.sha256(blob).hexdigest()
        if digest != self.sha256:
            raise ManifestError(f"version {self.version}: blob sha256 {digest[:12]} does not match {self.sha256[:12]}")

    def check_identity(self, fleet: str, version: int, epoch: str) -> None:
        """The signed fleet, version and epoch must be where the manifest was read: a signed manifest copied
        to another key, another fleet or restored into a registry that has since lost its data is refused."""
        read_at = {"fleet": fleet, "version": version, "epoch": epoch}
        signed = {"fleet": self.fleet, "version": self.version, "epoch": self.epoch}
        for what in ("fleet", "version", "epoch"):
            if signed[what] != read_at[what]:
                raise ManifestError(f"the manifest stored as {fleet} version {version} is signed for {what} "
                                    f"{signed[what] or '(none)'}, not {read_at[what] or '(none)'}")

    def check_input(self) -> None:
        """A node serves only graphs with the input every client and the crop pipeline rely on."""
        if self.input != EXPECTED_INPUT:
            raise ManifestError(f"version {self.version}: input {self.input} is not the expected {EXPECTED_INPUT}")
        if list(self.classes) != list(CLASSES):
            raise ManifestError(f"version {self.version}: classes {self.classes} are not {list(CLASSES)}")


def card_metrics(card: dict) -> dict:
    """The model-card numbers a fleet operator compares versions by: size, cost and accuracy per split."""
    metrics = {key: card[key] for key in ("params", "macs_per_face", "size_bytes") if key in card}
    for split, result in card.get("evaluation", {}).items():
        if "accuracy" in result:
            metrics[f"{split}_accuracy"] = result["accuracy"]
    return metrics


def new_manifest(
    blob: bytes, version: int, name: str, input_spec: dict, metrics: dict, parent: int | None, fleet: str = "", epoch: str = "",
    lineage: dict | None = None,
) -> Manifest:
    return Manifest(
        version=version,
        name=name,
        sha256=hashlib.sha256(blob).hexdigest(),
        size=len(blob),
        input=input_spec,
        metrics=metrics,
        created=utc_now_iso(),
        parent=parent,
        fleet=fleet,
        epoch=epoch,
        lineage=lineage or {},
    )
