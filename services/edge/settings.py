"""Edge node settings: one typed object, from EDGEFER_* environment variables, overridden by flags."""

from __future__ import annotations

import socket
from dataclasses import dataclass, replace
from pathlib import Path

from edgefer.env_settings import EnvSettings, resolve_threads
from edgefer.registry.connection import RegistryAccess


@dataclass(frozen=True)
class EdgeSettings(RegistryAccess, EnvSettings):
    host: str = "0.0.0.0"  # address the gRPC server binds
    port: int = 50051  # gRPC port (0: any free port)
    metrics_port: int = 9100  # Prometheus /metrics port (0: no endpoint)
    model_path: Path = Path("models/ean-pruned.onnx")  # served without a registry, or until the registry answers
    model_version: str = ""  # the version name model_path is served under (unset: the file's stem)
    intra_op_threads: int = 0  # the node's cores for onnxruntime and detection (0: all cores, as everywhere)
    workers: int = 1  # serving processes sharing the port (services/edge/replicas.py); 2 on a 2-core board serves 25% more
    replica_report_seconds: float = 1.0  # how often each extra process sends its metrics to the main one
    max_message_bytes: int = 4 * 1024 * 1024  # largest request or frame accepted
    max_concurrent_streams: int = 64  # HTTP/2 streams one connection may open at once
    max_streams: int = 256  # per serving process; more are refused with RESOURCE_EXHAUSTED
    max_connection_frame_bytes: int = 16 * 1024 * 1024  # frames waiting or in work per connection; more are dropped
    drop_stale_frames: bool = True  # streams: answer older waiting frames DROPPED, classify the newest
    batch_across_streams: bool = True  # faces of concurrent requests share onnxruntime calls (dynamic batching)
    batch_max_faces: int = 64  # faces per onnxruntime call at most
    batch_concurrency: int = 2  # onnxruntime batches computing at once per serving process
    batch_max_wait_ms: float = 0.0  # a lone face waits this long for others to batch with (0: never waits)
    detect_width: int = 320  # frames are searched for faces at this width (smaller: faster, misses small faces)
    redetect_every: int = 8  # streams: whole-frame detection every N frames, near known faces in between (1: always)
    grace_seconds: float = 5.0  # on SIGTERM: NOT_SERVING, then requests in flight get this long to finish
    handshake_timeout_seconds: float = 10.0  # a connection that has not completed its handshake by then is closed
    tls_cert: Path | None = None  # server certificate (TLS on when set with tls_key)
    tls_key: Path | None = None  # the server certificate's private key
    tls_client_ca: Path | None = None  # CA that client certificates must chain to (mutual TLS)
    # Model registry (Redis); an empty redis_url serves model_path only.
    redis_url: str = ""
    redis_read_url: str = ""  # a read replica: models, the desired record and announcements are read there; status goes to redis_url
    node_id: str = socket.gethostname()  # this node's name in the registry (status, canary buckets)
    registry_public_key: Path | None = None  # Ed25519 key that must have signed every manifest
    model_cache_dir: Path = Path("model-cache")  # verified models on disk, served at once after a restart
    sync_poll_seconds: float = 30.0  # look at the desired record this often even without an announcement
    heartbeat_seconds: float = 5.0  # status record period (stretched for large fleets: docs/registry.md)
    max_model_bytes: int = 64 * 1024 * 1024  # registry versions larger than this are refused before download

    def __post_init__(self) -> None:
        object.__setattr__(self, "intra_op_threads", resolve_threads("intra_op_threads", self.intra_op_threads))
        for name in ("workers", "batch_concurrency", "max_streams"):
            if getattr(self, name) < 1:
                raise ValueError(f"setting {name} must be at least 1, got {getattr(self, name)}")
        if self.max_connection_frame_bytes < self.max_message_bytes:
            raise ValueError("setting max_connection_frame_bytes must hold at least one frame of max_message_bytes")

    @property
    def process_cores(self) -> int:
        """The cores of one serving process: the node's, shared among its processes."""
        return max(1, self.intra_op_threads // max(1, self.workers))

    @property
    def calls_in_flight(self) -> int:
        """onnxruntime calls one process may run at once: its batches in flight, or one per core without batching."""
        return self.batch_concurrency if self.batch_across_streams else self.process_cores

    @property
    def session_threads(self) -> int:
        """Intra-op threads per onnxruntime call: a process's cores shared among its calls in flight. Several
        one-thread calls beat fewer many-thread ones on small batches: a non-spinning thread pool pays a
        wake-up per operator (on 2 cores, one face: 2,734 faces/s with one thread, 1,732 with two)."""
        return max(1, self.process_cores // self.calls_in_flight)

    def for_replica(self, port: int) -> EdgeSettings:
        """What an extra serving process runs with: the main process's bound port, and none of its
        node-wide duties (metrics endpoint, registry sync)."""
        return replace(self, port=port, metrics_port=0, redis_url="")
