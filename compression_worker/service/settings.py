"""The worker service's settings: one typed object, from EDGEFER_* environment variables and flags."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from compression_worker.service.gate import GateConfig
from edgefer.env_settings import EnvSettings, resolve_threads
from edgefer.registry.connection import RegistryAccess


@dataclass(frozen=True)
class WorkerServiceSettings(RegistryAccess, EnvSettings):
    work_dir: Path = Path("runs/jobs")  # one folder per job: checkpoints, ledger, exported model
    consumer: str = socket.gethostname()  # this worker's name in the job stream's consumer group
    signing_key: Path | None = None  # Ed25519 private key that signs every published manifest
    metrics_port: int = 9200  # Prometheus /metrics port (0: no endpoint)
    threads: int = 0  # torch threads for training (0: all cores)
    claim_idle_s: float = 600.0  # take over a job another worker left silent this long
    accuracy_tolerance: float = GateConfig.accuracy_tolerance  # gate: a candidate may be this much below the serving model's accuracy
    max_latency_ms: float = GateConfig.max_latency_ms  # gate: onnxruntime latency per face, one thread
    max_size_bytes: int = GateConfig.max_size_bytes  # gate: ONNX file size
    max_macs: int = GateConfig.max_macs  # gate: multiply-adds per face

    def __post_init__(self) -> None:
        object.__setattr__(self, "threads", resolve_threads("threads", self.threads))

    def gate(self) -> GateConfig:
        return GateConfig(self.accuracy_tolerance, self.max_latency_ms, self.max_size_bytes, self.max_macs)
