"""Progressive delivery against real edge node processes under stream load and a real redis-server: a good
version walks through every step, a version that calls every face one class is rolled back on divergence, a
slow one on latency, a node gone stale holds the rollout, and a controller killed mid-rollout resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgefer.cli.registry import main as registry_cli
from edgefer.localfleet.face_stream import FaceStream
from edgefer.localfleet.slowed_model import slowed
from edgefer.registry.manifest import EXPECTED_INPUT
from edgefer.rollouts.controller import RolloutController
from edgefer.rollouts.spec import RolloutSpec, merge_checks
from edgefer.rollouts.start import start_rollout
from edgefer.rollouts.store import RolloutStore
from tests.conftest import synthetic_faces

# Each step is judged as soon as its checks are decided (a bake is the longest it may take); the error and
# dropped-frame floors are wider than the defaults, which need ~400 faces to show "less than 1% more errors".
FAST = {"bake": "30s", "settle": "0.5s", "min_faces": 20}
RATES = [{"metric": "error_rate", "effect": 0.05}, {"metric": "dropped_rate", "effect": 0.1}]
# For the tests of stepping, holding and resuming with a candidate that is the stable function in other bytes: a
# scheduling blip of a shared 2-core runner (a resumed node's backlog, a neighbour's training) moved a p99 of
# 2 ms to 5 ms there; latency is what the slow-candidate test checks.
LATENCY_NOISE = [{"metric": "model_p50", "effect": 3.0}, {"metric": "latency_p90", "effect": 3.0}]


def spec(steps: str, checks: list[dict] = (), **settings) -> RolloutSpec:
    """The default checks with the test floors (`checks` replace those of their metric) and FAST's timings."""
    defaults = [c.__dict__ for c in RolloutSpec().checks]
    return RolloutSpec.from_dict({**FAST, **settings, "steps": steps,
                                  "checks": merge_checks(merge_checks(defaults, RATES), list(checks))})


def classifier_model(weights: list[float]) -> onnx.ModelProto:
    """Pooled pixels x weights -> 7 logits."""
    init = [helper.make_tensor("w", TensorProto.FLOAT, [1, 7], weights)]
    nodes = [helper.make_node("GlobalAveragePool", ["faces"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("MatMul", ["flat", "w"], ["logits"])]
    graph = helper.make_graph(nodes, "classifier",
                              [helper.make_tensor_value_info("faces", TensorProto.FLOAT, ["N", 1, 48, 48])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 7])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model


def classifier_onnx(weights: list[float], heavy: int = 0) -> bytes:
    """The classifier's graph; with `heavy`, that many extra 768x768 MatMuls on the input (slow, same answers)."""
    model = classifier_model(weights)
    return slowed(model, heavy) if heavy else model.SerializeToString()


def heavy_for(extra_ms: float) -> int:
    """How many of slowed()'s extra MatMuls add `extra_ms` to a one-thread call on this machine: the slow
    version must be clearly slower than the latency check's slack on any runner, not by a fixed count of MatMuls."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    probe = 64
    session = ort.InferenceSession(classifier_onnx(STABLE, probe), options, providers=["CPUExecutionProvider"])
    face = np.zeros((1, 1, 48, 48), np.float32)
    runs = []
    for _ in range(15):
        started = time.perf_counter()
        session.run(None, {"faces": face})
        runs.append(time.perf_counter() - started)
    per_matmul_ms = 1e3 * float(np.median(runs)) / probe
    return max(probe, int(np.ceil(extra_ms / per_matmul_ms)))


# "good" is the stable model's function in other bytes; ONE_CLASS answers "happy" whatever the face.
STABLE = [0.004 * k * (1 if k % 2 else -1) + 0.01 for k in range(7)]
GOOD = [w * 1.0001 for w in STABLE]
ONE_CLASS = [0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0]  # "happy" for every face


@pytest.fixture
def fleet(node_fleet):
    """Three nodes serving STABLE under load; yields (registry, signer, nodes, publish)."""
    registry, signer, start = node_fleet

    def publish(weights: list[float], heavy: int = 0, promote: bool = False) -> int:
        return registry.publish(classifier_onnx(weights, heavy), f"m{len(registry.versions())}", EXPECTED_INPUT, {},
                                signer, promote=promote).version

    stable = publish(STABLE, promote=True)
    nodes = start(3)
    for node in nodes:
        assert node.wait_version(str(stable), timeout_s=30)
    x, _ = synthetic_faces(64, seed=5)
    faces = np.stack([(x[i] // (1 + i % 4)).astype(np.uint8) for i in range(64)])  # brightness varies
    loads = [FaceStream(node.target, faces, fps=40.0) for node in nodes]
    for load in loads:
        load.start()
    yield registry, signer, nodes, publish
    for load in loads:
        load.stop.set()


def drive(controller: RolloutController, until: set[str], timeout_s: float = 60.0, seen: list | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = controller.tick()
        if seen is not None and record is not None:
            seen.append(record.state)
        if record is not None and record.state in until:
            return record
        time.sleep(0.2)
    raise AssertionError(f"rollout still {controller.store.get()} after {timeout_s}s")


def test_a_good_version_walks_through_every_step_to_everyone(fleet) -> None:
    registry, _, nodes, publish = fleet
    good = publish(GOOD)
    start_rollout(registry, good, spec("30,60:pause,100", LATENCY_NOISE), "test")
    controller = RolloutController(registry, stale_after_s=3)
    record = drive(controller, {"promoted", "rolled_back", "paused", "aborted"})
    assert record.state == "paused" and record.step == 2 and "the step's pause" in record.reason, record.reason
    assert registry.desired().canary.version == good  # the canary keeps serving while the operator looks
    assert registry_cli(["--redis-url", _url(registry), "rollout", "resume"]) == 0
    record = drive(controller, {"promoted", "rolled_back", "paused", "aborted"})
    assert record.state == "promoted", record.reason
    assert registry.desired().version == good and registry.desired().canary is None
    decisions = [d["decision"] for d in reversed(RolloutStore(registry.client, registry.keys).decisions(50))]
    assert [d for d in decisions if d in ("step", "advance", "promoted")] == ["step", "advance", "step", "advance", "promoted"]
    assert all(node.wait_version(str(good), timeout_s=10) for node in nodes)
    assert RolloutStore(registry.client, registry.keys).get().settled

    # the finished rollout never re-imposes its version: a later publish, promote and rollback each stand
    controller = RolloutController(registry, stale_after_s=3)
    url = _url(registry)
    later = publish(STABLE, promote=True)  # what a worker job's publish does (registry.publish(..., promote=True))
    _ticks_keep(controller, registry, later)
    assert registry_cli(["--redis-url", url, "promote", str(good)]) == 0
    _ticks_keep(controller, registry, good)
    assert registry_cli(["--redis-url", url, "rollback"]) == 0
    _ticks_keep(controller, registry, later)
    assert all(node.wait_version(str(later), timeout_s=10) for node in nodes)


def _ticks_keep(controller: RolloutController, registry, version: int, ticks: int = 5) -> None:
    for _ in range(ticks):
        controller.tick()
        assert registry.desired().version == version and registry.desired().canary is None
        time.sleep(0.1)


def test_a_controller_killed_between_ending_and_applying_a_rollout_applies_it_once(redis_server, signing_keys) -> None:
    from edgefer.registry.connection import RegistryAccess, connect
    from edgefer.registry.signing import ManifestSigner
    from edgefer.registry.store import ModelRegistry

    registry = ModelRegistry(connect(RegistryAccess(redis_url=redis_server.url)), "default")
    signer = ManifestSigner(signing_keys[0])
    stable, canary, later = (registry.publish(classifier_onnx(w), f"m{i}", EXPECTED_INPUT, {}, signer).version
                             for i, w in enumerate((STABLE, GOOD, ONE_CLASS)))
    registry.promote(stable)
    store = RolloutStore(registry.client, registry.keys)
    for outcome, expected in (("promoted", canary), ("rolled_back", stable), ("aborted", stable)):
        registry.promote(stable)
        started = start_rollout(registry, canary, spec("50,100"), "test")
        registry.set_canary(canary, ["node-0"], 0.0)
        # the record was saved as ended, and the controller died before it changed the desired record
        store.put_if(replace(started, state=outcome, canary_nodes=["node-0"]), started.revision)
        controller = RolloutController(registry)
        assert controller.tick().settled and registry.desired().version == expected, outcome
        assert registry.desired().canary is None
        registry.promote(later)
        for _ in range(3):
            controller.tick()
            assert registry.desired().version == later, outcome


def test_a_version_that_calls_every_face_one_class_is_rolled_back_at_the_first_step(fleet, capsys) -> None:
    registry, _, nodes, publish = fleet
    stable = registry.desired().version
    biased = publish(ONE_CLASS)
    start_rollout(registry, biased, spec("30,60,100"), "test")
    record = drive(RolloutController(registry, stale_after_s=3), {"promoted", "rolled_back", "paused", "aborted"})
    assert record.state == "rolled_back" and record.step == 0
    assert "class_mix" in record.reason and "chi-square p=" in record.reason
    assert registry.desired().version == stable and registry.desired().canary is None
    assert all(node.wait_version(str(stable), timeout_s=10) for node in nodes)
    assert registry_cli(["--redis-url", _url(registry), "rollout", "status"]) == 0
    out = capsys.readouterr().out
    assert "rolled_back" in out and "FAIL class_mix" in out


def test_a_slow_version_is_rolled_back_on_latency(fleet) -> None:
    registry, _, _, publish = fleet
    slow = publish(STABLE, heavy=heavy_for(15.0))  # frames of a few ms become ~20 ms: far past the +20% floors
    start_rollout(registry, slow, spec("30,60,100"), "test")
    record = drive(RolloutController(registry, stale_after_s=3), {"promoted", "rolled_back", "paused", "aborted"})
    assert record.state == "rolled_back" and "model_p50" in record.reason, record.reason
    assert "class_mix" not in record.reason  # the same answers, only slower


def test_a_node_that_goes_stale_during_a_step_holds_the_rollout(fleet) -> None:
    registry, _, nodes, publish = fleet
    good = publish(GOOD)
    start_rollout(registry, good, spec("30,60,100", LATENCY_NOISE, settle="1.5s", min_faces=200), "test")
    controller = RolloutController(registry, stale_after_s=2)
    drive(controller, {"running"}, timeout_s=10)
    while not controller.store.get().bake_started:
        controller.tick()
        time.sleep(0.2)
    frozen = nodes[0]
    os.kill(frozen._process.pid, signal.SIGSTOP)  # alive but silent: no heartbeats
    try:
        record = drive(controller, {"holding"}, timeout_s=15)
        assert frozen.node_id in record.reason and record.step == 0
    finally:
        os.kill(frozen._process.pid, signal.SIGCONT)
    record = drive(controller, {"promoted", "rolled_back", "paused", "aborted"}, timeout_s=60)
    assert record.state == "promoted", record.reason


def test_a_controller_killed_mid_rollout_resumes_where_it_was(fleet, redis_server) -> None:
    registry, _, _, publish = fleet
    good = publish(GOOD)
    start_rollout(registry, good, spec("30,60,100", LATENCY_NOISE, min_faces=80), "test")
    command = [sys.executable, "-m", "services.rollouts.main", "--redis-url", redis_server.url, "--metrics-port", "0",
               "--tick-s", "0.2", "--stale-after-s", "3"]
    store = RolloutStore(registry.client, registry.keys)
    first = subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 60
    while not ((r := store.get()) and r.step == 1 and r.participants) and time.monotonic() < deadline:
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert store.get().step == 1 and store.get().state == "running"  # killed in step 2
    second = subprocess.Popen(command)
    try:
        while store.get().state not in ("promoted", "rolled_back", "paused", "aborted") and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=20)
    assert store.get().state == "promoted"
    steps = [d["step"] for d in store.decisions(50) if d["decision"] == "step"]
    assert sorted(steps) == [1, 2]  # step 2 was not started twice: the second controller went on with it


def test_a_step_undecided_at_the_end_of_its_bake_pauses_and_says_how_many_faces_would_decide(fleet, capsys) -> None:
    registry, _, _, publish = fleet
    good = publish(GOOD)
    # "at most 0.1% more errors" cannot be shown on a few hundred faces without any error
    undecidable = [*LATENCY_NOISE, {"metric": "error_rate", "effect": 0.001}]
    start_rollout(registry, good, spec("50,100", undecidable, bake="4s"), "test")
    record = drive(RolloutController(registry, stale_after_s=3), {"promoted", "rolled_back", "paused", "aborted"})
    assert record.state == "paused" and record.step == 0, record.reason
    assert "undecided after its bake of 4s" in record.reason and "error_rate" in record.reason
    assert "wants ~" in record.reason and "canary faces" in record.reason
    assert registry.desired().canary.version == good  # nothing decided: the operator decides
    assert registry_cli(["--redis-url", _url(registry), "rollout", "status"]) == 0
    out = capsys.readouterr().out
    assert "last analysis: inconclusive" in out and "??   error_rate" in out and "ok   class_mix" in out


def test_operator_pause_resume_and_abort(fleet) -> None:
    registry, _, _, publish = fleet
    stable = registry.desired().version
    good = publish(GOOD)
    url = _url(registry)
    assert registry_cli(["--redis-url", url, "rollout", "start", str(good), "--steps", "50,100", "--bake", "30s"]) == 0
    controller = RolloutController(registry, stale_after_s=3)
    drive(controller, {"running"}, timeout_s=10)
    controller.tick()
    assert registry.desired().canary.version == good
    assert registry_cli(["--redis-url", url, "rollout", "pause"]) == 0
    assert controller.tick().state == "paused"
    assert registry_cli(["--redis-url", url, "rollout", "resume"]) == 0
    assert registry_cli(["--redis-url", url, "rollout", "abort"]) == 0
    assert registry.desired().version == stable and registry.desired().canary is None  # taken away at once
    assert registry_cli(["--redis-url", url, "rollout", "start", str(stable)]) == 2  # already the desired version


def _url(registry) -> str:
    kwargs = registry.client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/0"


def test_a_job_hands_its_version_to_the_controller_and_ends_with_the_rollouts_outcome(fleet, redis_server, signing_keys,
                                                                                      tmp_path, toy_npz) -> None:
    from compression_worker.service.settings import WorkerServiceSettings
    from compression_worker.service.worker import Worker
    from edgefer.cli.jobs import main as jobs_cli

    registry, _, nodes, _ = fleet
    stable = registry.desired().version
    worker = Worker(WorkerServiceSettings(redis_url=redis_server.url, work_dir=tmp_path / "jobs", signing_key=signing_keys[0],
                                          metrics_port=0, threads=1, consumer="w1", accuracy_tolerance=1.0,
                                          max_recall_drop=1.0))
    controller = RolloutController(registry, stale_after_s=3)
    stop = threading.Event()

    def run_controller() -> None:
        while not stop.wait(0.2):
            controller.tick()

    threading.Thread(target=run_controller, daemon=True).start()
    try:
        assert jobs_cli(["--redis-url", redis_server.url, "submit", "--data", str(toy_npz), "--job-id", "canaried",
                         "--arch", "ean-xs", "--teacher", "train", "--teacher-epochs", "1", "--round-epochs", "1",
                         "--local-epochs", "0", "--finetune-epochs", "1", "--prune-target", "0.3", "--no-quantize",
                         "--rollout", '{"steps": "50,100", "bake": "30s", "settle": "0.5s", "min_faces": 20}']) == 0
        outcome = worker.handle(worker.queue.next(block_ms=100, claim_idle_ms=60_000))
    finally:
        stop.set()
    record = worker.status.get("canaried")
    published = record["published_version"]
    # the job's EAN answers nothing like the stable linear model: the canary step catches it
    assert outcome == "rolled_back" and record["state"] == "rolled_back", record
    assert record["rollout"]["state"] == "rolled_back" and "class_mix" in record["rollout"]["reason"]
    assert registry.desired().version == stable and registry.desired().canary is None
    assert all(node.wait_version(str(stable), timeout_s=10) for node in nodes)
    assert published != stable


def test_unreadable_rollout_record_and_profile_are_shown_and_replaced_from_the_cli(redis_server, signing_keys,
                                                                                 capsys) -> None:
    from edgefer.registry.connection import RegistryAccess, connect
    from edgefer.registry.signing import ManifestSigner
    from edgefer.registry.store import ModelRegistry

    registry = ModelRegistry(connect(RegistryAccess(redis_url=redis_server.url)), "default")
    signer = ManifestSigner(signing_keys[0])
    stable, canary = (registry.publish(classifier_onnx(w), f"m{i}", EXPECTED_INPUT, {}, signer).version
                      for i, w in enumerate((STABLE, GOOD)))
    registry.promote(stable)
    url = _url(registry)
    registry.client.set(registry.keys.rollout, b"\x00garbage")
    registry.client.set(registry.keys.profile, b'{"max_macs": "lots"}')
    capsys.readouterr()
    assert registry_cli(["--redis-url", url, "status"]) == 0  # rows shown, then the two problems, no crash
    out = capsys.readouterr().out
    assert "rollout record:" in out and "abort --force" in out and "fleet profile:" in out and "profile set" in out
    assert registry_cli(["--redis-url", url, "rollout", "status"]) == 2
    assert "rollout abort --force" in capsys.readouterr().err
    assert registry_cli(["--redis-url", url, "rollout", "start", str(canary)]) == 2  # not replaced silently
    assert registry_cli(["--redis-url", url, "rollout", "abort", "--force"]) == 0
    assert "removed an unreadable rollout record" in capsys.readouterr().out
    assert RolloutStore(registry.client, registry.keys).get() is None and registry.desired().version == stable
    registry.client.set(registry.keys.rollout, b"[1, 2]")
    assert registry_cli(["--redis-url", url, "rollout", "start", str(canary), "--force", "--steps", "50,100"]) == 0
    assert RolloutStore(registry.client, registry.keys).get().version == canary
    assert registry_cli(["--redis-url", url, "profile", "show"]) == 2
    assert registry_cli(["--redis-url", url, "profile", "set", "--max-macs", "5000000"]) == 0
    assert "replaced an unreadable profile" in capsys.readouterr().out
    assert registry.stored_profile().max_macs == 5_000_000
