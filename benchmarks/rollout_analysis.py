"""Automated canary analysis on a local fleet under stream load: repeated rollouts of a bad and a good candidate,
and how often, how fast and on how many faces each was decided.

A real redis-server, N `edgefer-edge` processes on loopback serving the shipped pruned EAN, each streamed real
test faces at a fixed rate, and the rollout controller in this process. Candidates, interleaved round by round:
    one class  the pruned EAN with its last bias pushed to "happy": it answers "happy" for every face
    slow       the same answers after extra work worth a set fraction of the serving model's own time per face
               (measured here first, so the test does not depend on this machine's speed)
    good       the serving model republished (the same function in other bytes), twice per round
    int8       optional (--int8): the serving model's INT8 version, whose speed depends on the CPU
After each rollout the fleet goes back to the original stable version. The table gives, per candidate, what
happened to it (promoted, rolled back at step 1 or later, paused undecided), the median time and canary faces to
the decision, and the checks that decided.

    python benchmarks/rollout_analysis.py --rounds 10 --nodes 4 --fps 20 --steps 25,100
"""

from __future__ import annotations

import argparse
import re
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
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
from edgefer.rollouts.controller import RolloutController
from edgefer.rollouts.spec import RolloutSpec, merge_checks, parse_check, parse_steps
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


def republished(model: onnx.ModelProto, tag: str) -> bytes:
    """The same function in other bytes (a new version the registry stores apart)."""
    copy = onnx.ModelProto.FromString(model.SerializeToString())
    copy.doc_string = f"republished {tag}"
    return copy.SerializeToString()


def face_times_ms(blobs: list[bytes], face: np.ndarray, rounds: int = 40, runs: int = 25) -> list[float]:
    """Median onnxruntime time of one face on one thread (as the nodes run it) for each model, measured in
    interleaved rounds so that every model sees the same load of a busy machine."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sessions = [ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"]) for blob in blobs]
    feeds = [{s.get_inputs()[0].name: face} for s in sessions]
    times: list[list[float]] = [[] for _ in sessions]
    for round_ in range(rounds + 1):
        for session, feed, own in zip(sessions, feeds, times, strict=True):
            for _ in range(runs):
                started = time.perf_counter()
                session.run(None, feed)
                if round_:  # the first round warms up
                    own.append(time.perf_counter() - started)
    return [1e3 * float(np.median(own)) for own in times]


def slowed_by(model: onnx.ModelProto, fraction: float, face: np.ndarray) -> tuple[bytes, float, float]:
    """slowed() with as many extra MatMuls as make its time per face (1 + fraction) x the model's (measured, then
    corrected twice: the MatMuls' cost is not quite linear); with the two times measured last."""
    plain = model.SerializeToString()
    count = 16
    for _ in range(3):
        blob = slowed(model, count)
        base, measured = face_times_ms([plain, blob], face)
        count = max(1, round(count * fraction * base / max(measured - base, 1e-6)))
    blob = slowed(model, count)
    base, measured = face_times_ms([plain, blob], face)
    return blob, base, measured


@dataclass
class Outcome:
    candidate: str
    state: str
    step: int
    seconds: float
    canary_faces: int
    looks: int
    reason: str  # why it ended; for a promoted one, what was still undecided at its last inconclusive look

    @property
    def kind(self) -> str:
        if self.state == "rolled_back":
            return "rolled back at step 1" if self.step == 1 else "rolled back later"
        return self.state


def decided_by(reason: str) -> str:
    """The metrics named at the start of each failed or undecided check in a reason."""
    return ",".join(sorted(set(re.findall(r"\b(model_p\d+|latency_p\d+|class_mix|confidence|error_rate|dropped_rate) ",
                                          reason)))) or "-"


def build_spec(args: argparse.Namespace) -> RolloutSpec:
    defaults = [c.__dict__ for c in RolloutSpec().checks]
    return RolloutSpec.from_dict({"steps": parse_steps(args.steps, args.bake), "settle": args.settle,
                                  "min_faces": args.min_faces,
                                  "checks": merge_checks(defaults, [parse_check(c) for c in args.check])})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="rollouts of each bad candidate (good: twice this)")
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--fps", type=float, default=20.0, help="frames per second per node")
    parser.add_argument("--steps", default="25,100")
    parser.add_argument("--bake", default="3m", help="the longest bake of a step")
    parser.add_argument("--settle", default="3s")
    parser.add_argument("--min-faces", type=int, default=100)
    parser.add_argument("--slower", type=float, default=0.5, help="the slow candidate's extra time per face, as a "
                        "fraction of the serving model's own")
    parser.add_argument("--check", action="append", default=[], metavar="METRIC=EFFECT[@CONFIDENCE]")
    parser.add_argument("--int8", action="store_true", help="also roll out the serving model's INT8 version")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "fer2013" / "test_public.npz")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a killed run still stops its nodes and redis-server
    spec = build_spec(args)
    serving_model = onnx.load(str(REPO / "models" / "ean-pruned.onnx"))
    faces = load_faces(args.data).x
    faces = faces[np.random.default_rng(0).permutation(len(faces))]  # the file is sorted by class: every window must see all
    slow_blob, base_ms, slow_ms = slowed_by(serving_model, args.slower, faces[:1].astype(np.float32)[:, None] / 255)
    bad = [("one class", lambda i: biased(serving_model)), ("slow", lambda i: slow_blob)]
    good = [("good", lambda i: republished(serving_model, f"{i}a")), ("good", lambda i: republished(serving_model, f"{i}b"))]
    if args.int8:
        int8 = onnx.load(str(REPO / "models" / "ean-pruned-int8.onnx"))
        good.append(("int8", lambda i: republished(int8, str(i))))
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_keypair(root / "worker.pem", root / "worker.pub")
        redis = RedisServer(free_port(), root / "redis").start()
        nodes, loads = [], []
        try:
            registry = ModelRegistry(connect(RegistryAccess(redis_url=redis.url)))
            signer = ManifestSigner(root / "worker.pem")
            stable = registry.publish(serving_model.SerializeToString(), "ean-pruned", EXPECTED_INPUT, {}, signer,
                                      promote=True).version
            nodes = [EdgeNodeProcess(f"board-{i}", free_port(), redis.url, root / "worker.pub", root / f"cache-{i}",
                                     extra_args=["--sync-poll-seconds", "1", "--heartbeat-seconds", "1"]).start()
                     for i in range(args.nodes)]
            for node in nodes:
                assert node.wait_version(str(stable), timeout_s=60), node.node_id
            loads = [FaceStream(node.target, faces, args.fps, offset=97 * i) for i, node in enumerate(nodes)]
            for load in loads:
                load.start()
            time.sleep(5)
            controller = RolloutController(registry, stale_after_s=5)
            store = RolloutStore(registry.client, registry.keys)
            for round_ in range(args.rounds):
                for name, make in [*bad, *good]:
                    version = registry.publish(make(round_), name, EXPECTED_INPUT, {}, signer).version
                    started = time.monotonic()
                    start_rollout(registry, version, spec, "benchmark")
                    record = controller.tick()
                    while record is None or (record.state not in FINAL and record.state != "paused"):
                        time.sleep(0.25)
                        record = controller.tick()
                    seconds = time.monotonic() - started
                    analysis = record.last_analysis or {}
                    undecided = [d["reason"] for d in store.decisions(100)
                                 if d["version"] == version and d["decision"] == "inconclusive"]
                    reason = record.reason if record.state != "promoted" else (undecided or ["-"])[0]
                    outcomes.append(Outcome(name, record.state, record.step + (record.state != "promoted"), seconds,
                                            (analysis.get("canary") or {}).get("faces", 0), analysis.get("look", 0),
                                            reason))
                    print(f"round {round_ + 1} {name:<9} {record.state:<12} step {outcomes[-1].step} "
                          f"{seconds:6.1f} s  {outcomes[-1].canary_faces:>6} faces  {record.reason[:150]}"
                          + (f" (held by {decided_by(reason)})" if record.state == "promoted" else ""), flush=True)
                    if record.state == "paused":
                        store.update(lambda old: replace(old, state="aborted", reason="benchmark: undecided"))
                        controller.tick()  # settles it: the canary goes
                    registry.promote(stable)  # every rollout starts from the same fleet
                    for node in nodes:
                        node.wait_version(str(stable), timeout_s=30)
            print_table(args, spec, outcomes, base_ms, slow_ms)
        finally:
            for load in loads:
                load.stop.set()
            for node in nodes:
                node.stop()
            redis.stop()


def print_table(args: argparse.Namespace, spec: RolloutSpec, outcomes: list[Outcome], base_ms: float,
                slow_ms: float) -> None:
    checks = ", ".join(f"{c.metric} {c.effect:g}" for c in spec.checks)
    print(f"\n{args.nodes} nodes x {args.fps:g} frames/s, steps {args.steps} (longest bake {args.bake}), settle "
          f"{args.settle}, min {args.min_faces} faces a side, confidence {spec.checks[0].confidence:g}; checks: {checks}")
    print(f"serving model {base_ms:.3f} ms a face on one thread; slow candidate {slow_ms:.3f} ms "
          f"({slow_ms / base_ms - 1:+.0%})\n")
    print(f"{'candidate':<10} {'n':>3} {'promoted':>8} {'rb step 1':>9} {'rb later':>8} {'paused':>6} "
          f"{'median s':>8} {'median faces':>12} {'median looks':>12}  decided by (promoted: held longest by)")
    for name in dict.fromkeys(o.candidate for o in outcomes):
        rows = [o for o in outcomes if o.candidate == name]
        kinds = Counter(o.kind for o in rows)
        by = Counter(decided_by(o.reason) for o in rows)
        print(f"{name:<10} {len(rows):>3} {kinds['promoted']:>8} {kinds['rolled back at step 1']:>9} "
              f"{kinds['rolled back later']:>8} {kinds['paused']:>6} {statistics.median(o.seconds for o in rows):>8.1f} "
              f"{statistics.median(o.canary_faces for o in rows):>12.0f} {statistics.median(o.looks for o in rows):>12.0f}"
              f"  {', '.join(f'{k} x{v}' for k, v in by.most_common()) or '-'}")


if __name__ == "__main__":
    main()
