"""The compression worker service against a real redis-server: a tiny job end to end to an edge node,
duplicate delivery, the gate, bad jobs, and a worker killed mid-stage that resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compression_worker.service.settings import WorkerServiceSettings
from compression_worker.service.worker import Worker
from edgefer.cli.jobs import main as jobs_cli
from edgefer.jobs.queue import JobQueue
from edgefer.jobs.status import JobStatusStore
from edgefer.registry.connection import RegistryAccess, connect
from edgefer.registry.signing import TrustedKey
from edgefer.registry.store import ModelRegistry
from services.edge.model_cache import ModelCache
from services.edge.server import start_server
from services.edge.settings import EdgeSettings
from services.edge.sync_agent import SyncAgent, SyncConfig

TINY_JOB = ["--set", "arch=ean-xs", "--set", "teacher_epochs=1", "--set", "rounds=1", "--set", "round_epochs=1",
            "--set", "local_epochs=1", "--set", "finetune_epochs=1", "--prune-target", "0.5"]


def make_worker(redis_server, signing_keys, tmp_path: Path, **gate) -> Worker:
    settings = WorkerServiceSettings(redis_url=redis_server.url, work_dir=tmp_path / "jobs", signing_key=signing_keys[0],
                                     metrics_port=0, threads=2, consumer="w1", **gate)
    return Worker(settings)


def submit(redis_server, data: Path, *extra: str) -> None:
    assert jobs_cli(["--redis-url", redis_server.url, "submit", "--data", str(data), *extra]) == 0


def take(worker: Worker):
    delivery = worker.queue.next(block_ms=100, claim_idle_ms=60_000)
    assert delivery is not None
    return worker.handle(delivery)


def test_a_tiny_job_is_published_and_served_and_a_duplicate_publishes_nothing(redis_server, signing_keys, tmp_path, toy_npz, capsys):
    worker = make_worker(redis_server, signing_keys, tmp_path)
    submit(redis_server, toy_npz, "--job-id", "tiny1", *TINY_JOB)
    assert take(worker) == "published"
    record = worker.status.get("tiny1")
    assert record["state"] == "published" and record["published_version"] == 1 and record["gate"]["passed"]
    assert record["evaluation"]["candidate"]["macs"] > 0 and record["percent"] == 100.0
    ledger = json.loads((tmp_path / "jobs" / "tiny1" / "stages.json").read_text())
    assert list(ledger) == ["teacher", "distill", "prune", "export", "evaluate", "gate", "publish"]
    export = ledger["export"]
    int8_kept = export["held_back_int8"] >= export["held_back_float"] - 0.003
    assert export["onnx"] == (export["int8_onnx"] if int8_kept else export["float_onnx"])  # INT8 only if it keeps accuracy
    candidate = ledger["evaluate"]["candidate"]  # the kept graph is scored once, by the export stage
    assert candidate["accuracy"] == export["held_back"]["accuracy"] == (export["held_back_int8"] if int8_kept else export["held_back_float"])
    assert worker.metrics.registry.get_sample_value("edgefer_worker_jobs_total", {"outcome": "published"}) == 1
    assert worker.metrics.registry.get_sample_value("edgefer_worker_stage_seconds_count", {"stage": "prune"}) == 1

    registry = ModelRegistry(connect(RegistryAccess(redis_url=redis_server.url)))
    node = start_server(EdgeSettings(host="127.0.0.1", port=0, metrics_port=0, intra_op_threads=1))
    agent = SyncAgent(registry, TrustedKey(signing_keys[1]), node, ModelCache(tmp_path / "cache"),
                      SyncConfig("edge-1", poll_interval_s=1.0, heartbeat_s=0.5))
    agent.start()
    try:
        deadline = time.monotonic() + 15
        while (node.holder.current() is None or node.holder.current().version != "1") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert node.holder.current().version == "1"  # the signed job output passed every node check
    finally:
        agent.stop()
        node.stop(0)

    submit(redis_server, toy_npz, "--job-id", "tiny1", *TINY_JOB)  # delivered again
    assert take(worker) == "duplicate"
    assert [m.version for m in registry.versions()] == [1]
    assert jobs_cli(["--redis-url", redis_server.url, "status", "tiny1"]) == 0
    assert "published as version 1" in capsys.readouterr().out


def test_a_job_can_distil_consistently_from_a_given_teacher(redis_server, signing_keys, tmp_path, toy_npz):
    import torch

    from compression_worker.export import export_onnx
    from compression_worker.model.ean import EAN
    from edgefer.jobs.architectures import PRESETS

    torch.manual_seed(0)
    teacher = export_onnx(EAN(PRESETS["ean-xs"]), tmp_path / "teacher.onnx")
    worker = make_worker(redis_server, signing_keys, tmp_path)
    submit(redis_server, toy_npz, "--job-id", "taught", *TINY_JOB, "--set", "distill_mode=consistent",
           "--set", f'teachers=["{teacher}"]', "--set", "ema_decay=0.9", "--set", "quantize=false")
    assert take(worker) == "published"
    ledger = json.loads((tmp_path / "jobs" / "taught" / "stages.json").read_text())
    assert ledger["teacher"]["models"] == [str(teacher)]  # adopted, not trained
    its = json.loads((tmp_path / "jobs" / "taught" / "distill" / "its.json").read_text())
    assert its["its"]["mode"] == "consistent" and its["rounds"][0]["teacher"] == str(teacher)
    prune = json.loads((tmp_path / "jobs" / "taught" / "prune" / "prune.json").read_text())
    assert prune["teacher"] == str(teacher) and prune["prune"]["distill_mode"] == "consistent"


def test_a_model_that_fails_the_gate_is_not_published(redis_server, signing_keys, tmp_path, toy_npz):
    worker = make_worker(redis_server, signing_keys, tmp_path, max_macs=1000)
    submit(redis_server, toy_npz, "--job-id", "gated", *TINY_JOB, "--set", "quantize=false")
    assert take(worker) == "rejected"
    gate = worker.status.get("gated")["gate"]
    assert not gate["passed"] and "MACs exceed 1,000" in gate["reasons"][0]
    assert ModelRegistry(connect(RegistryAccess(redis_url=redis_server.url))).versions() == []


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"prune_target": 0.99}, "impossible pruning target 0.99"),
        ({"teacher_epoch": 3}, "unknown job settings: teacher_epoch"),
        ({"rounds": "two"}, "job setting rounds: 'two' is not int"),
        ({"distill_mode": "live"}, "unknown distill_mode 'live'"),
        ({"teachers": ["/absent/teacher.onnx"]}, "/absent/teacher.onnx: no such teacher model file"),
        ({"teachers": "t.onnx"}, "job setting teachers: 't.onnx' is not list[str] | None"),
    ],
)
def test_bad_jobs_fail_with_their_message_and_the_worker_goes_on(redis_server, signing_keys, tmp_path, toy_npz, extra, message):
    worker = make_worker(redis_server, signing_keys, tmp_path)
    queue = JobQueue(connect(RegistryAccess(redis_url=redis_server.url)))
    queue.submit(json.dumps({"data": str(toy_npz), "job_id": "bad", **extra}))
    queue.submit(json.dumps({"data": str(tmp_path / "missing.npz"), "job_id": "nodata"}))
    outcomes = [take(worker), take(worker)]
    assert outcomes == ["failed", "failed"]
    records = dict(worker.status.recent())
    errors = [r.get("error", "") for r in records.values()]
    assert any(message in e for e in errors), errors
    assert any("missing.npz: no such data file" in e for e in errors)


def test_a_job_for_a_fleet_with_an_unreadable_profile_fails_saying_how_to_replace_it(redis_server, signing_keys,
                                                                                      tmp_path, toy_npz):
    worker = make_worker(redis_server, signing_keys, tmp_path)
    worker.client.set(worker.registry.keys.profile, b"not json")
    submit(redis_server, toy_npz, "--job-id", "profiled", *TINY_JOB)
    assert take(worker) == "failed"
    error = worker.status.get("profiled")["error"]
    assert "profile of fleet default cannot be read" in error and "profile set" in error, error


def test_a_worker_killed_mid_stage_resumes_the_job_and_finishes(redis_server, signing_keys, tmp_path, toy_npz):
    submit(redis_server, toy_npz, "--job-id", "longer", "--set", "arch=ean-xs", "--set", "teacher_epochs=4",
           "--set", "rounds=1", "--set", "round_epochs=1", "--set", "local_epochs=1", "--set", "finetune_epochs=1",
           "--set", "quantize=false")
    command = [sys.executable, "-m", "compression_worker.service.worker", "--redis-url", redis_server.url, "--work-dir",
               str(tmp_path / "jobs"), "--signing-key", str(signing_keys[0]), "--metrics-port", "0", "--threads", "2",
               "--consumer", "w1"]
    status = JobStatusStore(connect(RegistryAccess(redis_url=redis_server.url)))
    log = open(tmp_path / "worker.log", "wb")
    first = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 120
    while (status.get("longer") or {}).get("epoch", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (status.get("longer") or {}).get("stage") == "teacher"
    first.send_signal(signal.SIGKILL)  # mid-stage, as a crash would
    first.wait()
    second = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        while (status.get("longer") or {}).get("state") not in ("published", "failed") and time.monotonic() < deadline + 60:
            time.sleep(0.2)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    assert status.get("longer")["state"] == "published"
    assert "resuming from" in (tmp_path / "worker.log").read_text()
