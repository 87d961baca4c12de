"""The worker service's settings: one typed object, from EDGEFER_* environment variables and flags."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from compression_worker.service.gate import GateConfig
from edgefer.env_settings import EnvSettings, resolve_threads
from edgefer.registry.connection import RegistryAccess
from edgefer.registry.profile import FleetProfile


@dataclass(frozen=True)
class WorkerServiceSettings(RegistryAccess, EnvSettings):
    work_dir: Path = Path("runs/jobs")  # one folder per job: checkpoints, ledger, exported model
    consumer: str = socket.gethostname()  # this worker's name in the job stream's consumer group
    signing_key: Path | None = None  # Ed25519 private key that signs every published manifest
    metrics_port: int = 9200  # Prometheus /metrics port (0: no endpoint)
    threads: int = 0  # torch and onnxruntime threads of a job (0: all cores)
    device: str = "auto"  # cpu, cuda or auto (cuda when the node has a GPU and torch was built for it)
    claim_idle_s: float = 600.0  # take over a job another worker left silent this long
    lineage_dir: Path | None = None  # teachers and float students kept by sha256 (unset: lineage/ beside work_dir)
    shipped_teachers: Path = Path("models/teachers")  # ONNX teachers with model cards, added to the lineage at start
    accuracy_tolerance: float = GateConfig.accuracy_tolerance  # gate: a candidate may be this much below the serving model's accuracy
    max_recall_drop: float = GateConfig.max_recall_drop  # gate: no class's recall may fall more than this below the serving model's
    max_latency_ms: float = FleetProfile.max_latency_ms  # for a fleet without a stored profile: latency budget per face
    max_size_bytes: int = FleetProfile.max_size_bytes  # for a fleet without a stored profile: ONNX file size budget
    max_macs: int = FleetProfile.max_macs  # for a fleet without a stored profile: multiply-adds per face (every pass)

    def __post_init__(self) -> None:
        object.__setattr__(self, "threads", resolve_threads("threads", self.threads))
        if self.lineage_dir is None:
            object.__setattr__(self, "lineage_dir", self.work_dir.parent / "lineage")

    def default_profile(self) -> FleetProfile:
        """The device class of a fleet that has none stored in the registry."""
        return FleetProfile(self.max_macs, self.max_size_bytes, self.max_latency_ms)

    def gate(self, profile: FleetProfile) -> GateConfig:
        return GateConfig(self.accuracy_tolerance, self.max_recall_drop, profile)
