"""A fleet's device class: the budgets every model it serves must fit, stored in the registry.

Fleets are made of one kind of board each (a Pi Zero class, a Pi 4, a Jetson); a compression job targets a
fleet, prunes to its MAC budget and is gated against its budgets and against the model that fleet serves.
A fleet without a stored profile has the default one (the budgets of the default gate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from edgefer.json_record import JsonRecord
from edgefer.settings_fields import from_json


class ProfileError(ValueError):
    """A profile that cannot be stored or read; the message names the field."""


@dataclass(frozen=True)
class FleetProfile(JsonRecord):
    """A device class's budgets; read strictly (an unknown or mistyped budget is named, not ignored)."""

    record_name: ClassVar[str] = "fleet profile"
    record_error: ClassVar[type[Exception]] = ProfileError

    max_macs: int = 5_000_000  # multiply-adds per face of the served graph, every pass counted (mirror averaging: 2)
    max_size_bytes: int = 2_000_000  # ONNX file size: what a node downloads and keeps in memory
    max_latency_ms: float = 2.0  # median onnxruntime latency per face, batch 1, measured with latency_threads
    latency_threads: int = 1  # onnxruntime threads a node of this class gives one request
    description: str = ""  # the boards this fleet is made of, for people

    def __post_init__(self) -> None:
        if self.max_macs <= 0 or self.max_size_bytes <= 0 or self.max_latency_ms <= 0 or self.latency_threads < 1:
            raise ProfileError("budgets must be positive and latency_threads >= 1")

    @classmethod
    def from_dict(cls, data: object) -> FleetProfile:
        try:
            return from_json(cls, data, "fleet profile")
        except TypeError as exc:  # a required budget given as null
            raise ProfileError(f"fleet profile: {exc}") from exc
        except ProfileError:
            raise
        except ValueError as exc:
            raise ProfileError(str(exc)) from exc

    def describe(self) -> str:
        return (
            f"max {self.max_macs / 1e6:g}M MACs/face, {self.max_size_bytes:,} bytes, "
            f"{self.max_latency_ms:g} ms at {self.latency_threads} thread(s)"
            + (f" ({self.description})" if self.description else "")
        )
