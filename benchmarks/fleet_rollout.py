"""Model rollout through Redis to a local fleet of edge node processes; prints a table.

A real redis-server and N `edgefer-edge` processes on loopback; every node also serves a paced stream
of face crops from this process. Each of the R publishes signs and stores a new version and promotes
it; the time counted is from the start of the publish to the moment every node's status record (which
a node writes right after its atomic swap) names the new version. Any stream result that is not OK,
and any RPC error, counts as a failed request.

    python benchmarks/fleet_rollout.py --nodes 8 --publishes 20
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from edgefer.localfleet.edge_nodes import EdgeNodeProcess
from edgefer.localfleet.face_stream import FaceStream
from edgefer.localfleet.ports import free_port
from edgefer.localfleet.redis_server import RedisServer
from edgefer.registry.connection import RegistryAccess, connect
from edgefer.registry.manifest import EXPECTED_INPUT
from edgefer.registry.signing import ManifestSigner, generate_keypair
from edgefer.registry.status import NodeStatus
from edgefer.registry.store import ModelRegistry
from edgefer.registry.version import version_label

REPO = Path(__file__).resolve().parent.parent


def wait_converged(registry: ModelRegistry, node_ids: list[str], version: str, timeout_s: float) -> float | None:
    keys = [registry.keys.node_status(n) for n in node_ids]
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        raws = registry.client.mget(keys)
        if all(raw is not None and NodeStatus.from_json(raw).version == version for raw in raws):
            return time.perf_counter()
        time.sleep(0.002)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--publishes", type=int, default=20)
    parser.add_argument("--fps", type=float, default=10.0, help="stream rate per node")
    parser.add_argument("--model", type=Path, default=REPO / "models" / "ean-baseline.onnx")
    args = parser.parse_args()
    blob = args.model.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        generate_keypair(work / "k.pem", work / "k.pub")
        redis_server = RedisServer(free_port(), work / "redis").start()
        registry = ModelRegistry(connect(RegistryAccess(redis_url=redis_server.url)))
        signer = ManifestSigner(work / "k.pem")
        nodes = [
            EdgeNodeProcess(f"node-{i}", free_port(), redis_server.url, work / "k.pub", work / f"cache-{i}",
                            extra_args=["--heartbeat-seconds", "1"]).start()
            for i in range(args.nodes)
        ]
        stop = threading.Event()
        try:
            first = version_label(registry.publish(blob, "bench", EXPECTED_INPUT, {}, signer, promote=True).version)
            if not all(node.wait_version(first, timeout_s=60) for node in nodes):
                raise SystemExit("the fleet did not start")
            face = np.random.default_rng(0).integers(0, 256, (1, 48, 48), dtype=np.uint8)
            streams = [FaceStream(node.target, face, args.fps, stop, reconnect=False) for node in nodes]
            for s in streams:
                s.start()
            time.sleep(1.0)
            seconds = []
            for _ in range(args.publishes):
                started = time.perf_counter()
                version = version_label(registry.publish(blob, "bench", EXPECTED_INPUT, {}, signer, promote=True).version)
                done = wait_converged(registry, [n.node_id for n in nodes], version, timeout_s=30)
                seconds.append(float("inf") if done is None else done - started)
                time.sleep(0.5)  # let the streams see the new version before the next publish
            stop.set()
            for s in streams:
                s.join(timeout=5)
        finally:
            stop.set()
            for node in nodes:
                node.stop()
            redis_server.stop()
    ms = np.array(seconds) * 1e3
    requests = sum(s.ok + s.failed for s in streams)
    print("| nodes | publishes | publish -> all serving p50 (ms) | p99 (ms) | max (ms) | stream requests | failed |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {args.nodes} | {args.publishes} | {np.percentile(ms, 50):.0f} | {np.percentile(ms, 99):.0f} | {ms.max():.0f} "
          f"| {requests} | {sum(s.failed for s in streams)} |")


if __name__ == "__main__":
    main()
