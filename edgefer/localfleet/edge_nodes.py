"""Edge node processes (`python -m services.edge.main`) that follow a registry, for tests and benchmarks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from edgefer.v1 import edge_pb2, edge_pb2_grpc


def served_model(target: str, timeout_s: float = 1.0) -> tuple[str, str] | None:
    """(version, sha256) of the model the node at `target` serves, or None while it has none (or is not up yet)."""
    with grpc.insecure_channel(target) as channel:
        try:
            info = edge_pb2_grpc.EdgeFerStub(channel).GetModelInfo(edge_pb2.GetModelInfoRequest(), timeout=timeout_s)
        except grpc.RpcError:
            return None
    return info.version, info.sha256


def served_version(target: str, timeout_s: float = 1.0) -> str | None:
    """The version the node at `target` answers with, or None while it has none (or is not up yet)."""
    model = served_model(target, timeout_s)
    return model[0] if model else None


@dataclass
class EdgeNodeProcess:
    node_id: str
    port: int
    redis_url: str
    public_key: Path
    cache_dir: Path
    fleet: str = "default"
    extra_args: list[str] = field(default_factory=list)
    log_path: Path | None = None
    _process: subprocess.Popen | None = None

    def start(self) -> EdgeNodeProcess:
        args = [sys.executable, "-m", "services.edge.main", "--host", "127.0.0.1", "--port", str(self.port)]
        args += ["--metrics-port", "0", "--redis-url", self.redis_url, "--fleet", self.fleet, "--node-id", self.node_id]
        args += ["--registry-public-key", str(self.public_key), "--model-cache-dir", str(self.cache_dir)]
        args += ["--model-path", "/nonexistent", "--intra-op-threads", "1", *self.extra_args]
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self._process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return self

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def served_version(self, timeout_s: float = 1.0) -> str | None:
        return served_version(self.target, timeout_s)

    def served_model(self, timeout_s: float = 1.0) -> tuple[str, str] | None:
        return served_model(self.target, timeout_s)

    def wait_version(self, version: str, timeout_s: float = 20.0, sha256: str | None = None) -> bool:
        """Until the node serves `version` (and, when given, those bytes); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            model = self.served_model()
            if model is not None and model[0] == version and sha256 in (None, model[1]):
                return True
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"edge node {self.node_id} exited with {self._process.returncode}")
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
