"""Automated canary analysis on a local fleet under stream load: three rollouts, and how long each decision took.

A real redis-server, N `edgefer-edge` processes on loopback serving the shipped pruned EAN, each streamed real
test faces at a fixed rate, and the rollout controller in this process. Three candidates go through the same
spec: one that calls every face "happy" (the pruned EAN with a biased final layer), one that answers the same
but does extra work per face (slow), and a good one (the INT8 version of the serving model). For each: the
outcome, the step it reached, the time from start to decision and what the candidate served before it ended.

    python benchmarks/rollout_analysis.py --nodes 8 --fps 10 --bake 20s
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgefer.datasets import load_faces
from edgefer.labels import CLASSES
from edgefer.localfleet.edge_nodes import EdgeNodeProcess
from edgefer.localfleet.face_stream import FaceStream
from edgefer.localfleet.ports import free_port
from edgefer.localfleet.redis_server import RedisServer
from edgefer.localfleet.slowed_model import slowed
from edgefer.registry.connection import RegistryAccess, connect
from edgefer.registry.manifest import EXPECTED_INPUT
from edgefer.registry.signing import ManifestSigner, generate_keypair
from edgefer.registry.store import ModelRegistry
from edgefer.registry.version import version_label
from edgefer.rollouts.controller import RolloutController
from edgefer.rollouts.spec import RolloutSpec
from edgefer.rollouts.start import start_rollout
from edgefer.rollouts.store import FINAL, RolloutStore

REPO = Path(__file__).resolve().parent.parent


def biased(model: onnx.ModelProto, emotion: str = "happy", shift: float = 20.0) -> bytes:
    """The same network with the bias of its last layer pushed towards one class: it answers `emotion` always."""
    copy = onnx.ModelProto.FromString(model.SerializeToString())
    last = [n for n in copy.graph.node if n.op_type == "Gemm"][-1]
    init = {i.name: i for i in copy.graph.initializer}[last.input[2]]
    bias = numpy_helper.to_array(init).copy()
    bias[CLASSES.index(emotion)] += shift
    init.CopyFrom(numpy_helper.from_array(bias.astype(np.float32), init.name))
    return copy.SerializeToString()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--fps", type=float, default=10.0, help="frames per second per node")
    parser.add_argument("--steps", default="10,50,100")
    parser.add_argument("--bake", default="20s")
    parser.add_argument("--settle", default="3s")
    parser.add_argument("--min-faces", type=int, default=100)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "fer2013" / "test_public.npz")
    args = parser.parse_args()
    spec = RolloutSpec(steps=args.steps, bake=args.bake, settle=args.settle, min_faces=args.min_faces)
    serving_model = onnx.load(str(REPO / "models" / "ean-pruned.onnx"))
    candidates = [("one class (biased last layer)", biased(serving_model)), ("slow (extra work per face)", slowed(serving_model)),
                  ("good (INT8 of the serving model)", (REPO / "models" / "ean-pruned-int8.onnx").read_bytes())]
    faces = load_faces(args.data).x
    faces = faces[np.random.default_rng(0).permutation(len(faces))]  # the file is sorted by class: every window must see all
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_keypair(root / "worker.pem", root / "worker.pub")
        redis = RedisServer(free_port(), root / "redis").start()
        nodes, loads = [], []
        try:
            registry = ModelRegistry(connect(RegistryAccess(redis_url=redis.url)))
            signer = ManifestSigner(root / "worker.pem")
            stable = registry.publish((REPO / "models" / "ean-pruned.onnx").read_bytes(), "ean-pruned", EXPECTED_INPUT, {},
                                      signer, promote=True).version
            nodes = [EdgeNodeProcess(f"board-{i}", free_port(), redis.url, root / "worker.pub", root / f"cache-{i}",
                                     extra_args=["--sync-poll-seconds", "1", "--heartbeat-seconds", "1"]).start()
                     for i in range(args.nodes)]
            for node in nodes:
                assert node.wait_version(str(stable), timeout_s=60), node.node_id
            loads = [FaceStream(node.target, faces, args.fps, offset=97 * i) for i, node in enumerate(nodes)]
            for load in loads:
                load.start()
            time.sleep(5)
            rows = []
            controller = RolloutController(registry, stale_after_s=5)
            for name, blob in candidates:
                version = registry.publish(blob, name.split()[0], EXPECTED_INPUT, {}, signer).version
                started = time.monotonic()
                start_rollout(registry, version, spec, "benchmark")
                record = controller.tick()
                while record is None or record.state not in FINAL:
                    time.sleep(0.25)
                    record = controller.tick()
                seconds = time.monotonic() - started
                desired = registry.desired().version
                for node in nodes:
                    node.wait_version(str(desired), timeout_s=30)
                served = sum(load.by_version.get(version_label(version), 0) for load in loads)
                rows.append((name, record.state, record.step + 1, seconds, served, record.reason))
            store = RolloutStore(registry.client, registry.keys)
            print(f"\n{args.nodes} nodes, {args.fps:g} frames/s each, steps {args.steps}%, settle {args.settle}, "
                  f"bake {args.bake}, min {args.min_faces} faces a side\n")
            print(f"{'candidate':<34} {'outcome':<12} {'step':>4} {'decision s':>10} {'frames served':>13}  reason")
            for name, state, step, seconds, served, reason in rows:
                print(f"{name:<34} {state:<12} {step:>4} {seconds:>10.1f} {served:>13,}  {reason[:110]}")
            print(f"\n{len(store.decisions(1000))} decisions logged")
        finally:
            for load in loads:
                load.stop.set()
            for node in nodes:
                node.stop()
            redis.stop()


if __name__ == "__main__":
    main()
