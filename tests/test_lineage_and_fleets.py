"""Jobs that build on the lineage and compress to each fleet's device class (real redis-server, tiny data):
artefacts kept once and verified, teacher=best, extra data and the held-back split, fleet profiles driving the
prune target and the gate, a job for one fleet never reaching another's nodes, and the per-class recall rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from compression_worker.lineage_store import LineageStore, adopt_shipped_teachers, file_sha256
from compression_worker.service.gate import GateConfig, decide
from compression_worker.service.settings import WorkerServiceSettings
from compression_worker.service.worker import Worker
from compression_worker.training.run import DataConfig, load_splits
from edgefer.cli.jobs import main as jobs_cli
from edgefer.cli.registry import main as registry_cli
from edgefer.jobs.lineage import Artefact, LineageError, LineageIndex
from edgefer.labels import CLASSES
from edgefer.registry.connection import RegistryAccess, connect
from edgefer.registry.profile import FleetProfile
from edgefer.registry.store import ModelRegistry
from tests.conftest import linear_onnx, synthetic_faces

TINY = ["--arch", "ean-xs", "--teacher-epochs", "1", "--rounds", "1", "--round-epochs", "1", "--local-epochs", "1",
        "--finetune-epochs", "1", "--no-quantize"]


def make_worker(redis_server, signing_keys, tmp_path: Path) -> Worker:
    settings = WorkerServiceSettings(redis_url=redis_server.url, work_dir=tmp_path / "jobs", signing_key=signing_keys[0],
                                     metrics_port=0, threads=2, consumer="w1")
    return Worker(settings)


def run_job(worker: Worker, redis_server, data: Path, job_id: str, *flags: str) -> str:
    assert jobs_cli(["--redis-url", redis_server.url, "submit", "--data", str(data), "--job-id", job_id, *flags]) == 0
    delivery = worker.queue.next(block_ms=100, claim_idle_ms=60_000)
    return worker.handle(delivery)


def ledger(tmp_path: Path, job_id: str) -> dict:
    return json.loads((tmp_path / "jobs" / job_id / "stages.json").read_text())


def test_an_artefact_is_stored_once_verified_by_sha256_and_indexed_again(redis_server, tmp_path: Path) -> None:
    index = LineageIndex(connect(RegistryAccess(redis_url=redis_server.url)))
    store = LineageStore(tmp_path / "lineage", index)
    model = tmp_path / "m.pt"
    model.write_bytes(b"weights-1")
    first = store.add(model, kind="teacher", arch="ean-xs", data="d", split="s", held_back_accuracy=0.5)
    again = store.add(model, kind="teacher", arch="ean-xs", data="d", split="s", held_back_accuracy=0.9)
    assert again == first and len(list((tmp_path / "lineage").glob("*.pt"))) == 1
    assert store.path(first.sha256[:12]).read_bytes() == b"weights-1"
    assert index.all() == [first]

    (tmp_path / "lineage" / first.file).write_bytes(b"weights-2")  # altered on the volume
    with pytest.raises(LineageError, match="no longer has the stored bytes"):
        store.path(first.sha256)
    with pytest.raises(LineageError, match="no single lineage artefact"):
        store.path("deadbeef")

    index.client.flushall()  # Redis lost its data: the volume is the source
    assert store.reindex() == 1 and index.all() == [first]


def test_best_is_the_most_accurate_model_that_never_saw_the_held_back_faces(tmp_path: Path) -> None:
    store = LineageStore(tmp_path / "lineage")

    def add(name: str, accuracy: float, data: str = "D", split: str = "S") -> Artefact:
        path = tmp_path / name
        path.write_bytes(name.encode())
        return store.add(path, kind="teacher", arch="ean-m", data=data, split=split, held_back_accuracy=accuracy)

    second = add("a.pt", 0.60)
    good = add("b.pt", 0.80)
    other_data = add("c.pt", 0.95, data="X")
    add("d.pt", 0.99, split="other")  # judged on other faces: may have trained on these
    assert store.best("D", "S") == [good]
    assert store.best("D+E", "S") == [good]  # trained on part of the union, split by the same rule
    assert store.best("X", "S") == [other_data]
    assert store.best("Y", "S") == []
    assert store.best("D", "S", count=3) == [good, second]  # an ensemble: as many as there are, best first


def test_extra_data_is_merged_and_the_held_back_faces_stay_held_back(tmp_path: Path, toy_npz: Path) -> None:
    x, y = synthetic_faces(140, seed=7)
    extra = tmp_path / "extra.npz"
    np.savez(extra, x=x, y=y)
    base = load_splits(DataConfig(toy_npz))
    union = load_splits(DataConfig(toy_npz, extra_path=extra))
    key = lambda faces: {face.tobytes() for face in faces.x}
    assert len(union.train) + len(union.val) == len(base.train) + len(base.val) + 140
    assert key(base.val) <= key(union.val)  # what a base-data model never trained on is still held back
    assert not key(union.train) & key(union.val)
    assert np.bincount(union.val.y, minlength=7).min() > 0  # stratified
    assert DataConfig(toy_npz, extra_path=extra).identity().startswith(DataConfig(toy_npz).identity() + "+")


def test_jobs_reuse_the_best_stored_teacher_and_record_the_lineage(redis_server, signing_keys, tmp_path, toy_npz,
                                                                    capsys) -> None:
    worker = make_worker(redis_server, signing_keys, tmp_path)
    assert run_job(worker, redis_server, toy_npz, "first", *TINY, "--teacher", "train") == "published"
    first = ledger(tmp_path, "first")
    assert first["teacher"]["source"] == "trained"
    teacher_sha, student_sha = first["teacher"]["sha256"], first["distill"]["sha256"]
    records = {a.sha256: a for a in worker.lineage.records()}
    assert records[teacher_sha].kind == "teacher" and records[student_sha].parent == teacher_sha

    x, y = synthetic_faces(140, seed=7)
    np.savez(tmp_path / "extra.npz", x=x, y=y)
    assert run_job(worker, redis_server, toy_npz, "second", *TINY, "--extra-data", str(tmp_path / "extra.npz"),
                   "--teacher.ensemble", "1", "--set", "promote=false") == "published"  # the best one alone
    second = ledger(tmp_path, "second")
    best = max(records.values(), key=lambda a: (a.held_back_accuracy, a.created, a.sha256))
    assert second["teacher"]["source"] == "lineage" and second["teacher"]["sha256"] == best.sha256
    assert not (tmp_path / "jobs" / "second" / "teacher").exists()  # nothing trained: the saving

    registry = ModelRegistry(worker.client)
    manifest = registry.manifest(second["publish"]["version"])
    assert manifest.lineage["teacher"] == best.sha256 and manifest.lineage["student"] == second["distill"]["sha256"]
    assert "+" in manifest.lineage["data"]

    assert run_job(worker, redis_server, toy_npz, "named", *TINY, "--teacher", teacher_sha[:12]) == "published"
    named = ledger(tmp_path, "named")
    assert named["teacher"]["sha256"] == teacher_sha
    assert named["distill"] == {**first["distill"], "source": "lineage", "seconds": named["distill"]["seconds"],
                                "model": named["distill"]["model"]}  # the same recipe: the stored student, not rerun

    other = tmp_path / "other.npz"
    np.savez(other, x=x, y=y)
    assert run_job(worker, redis_server, other, "foreign", *TINY, "--teacher", teacher_sha) == "failed"
    assert "may have seen this job's held-back faces" in worker.status.get("foreign")["error"]

    capsys.readouterr()
    assert jobs_cli(["--redis-url", redis_server.url, "lineage"]) == 0
    out = capsys.readouterr().out
    assert teacher_sha[:12] in out and student_sha[:12] in out


def test_a_fleet_profile_drives_the_prune_target_and_the_gate_and_only_that_fleet_gets_the_model(
        redis_server, signing_keys, tmp_path, toy_npz, capsys) -> None:
    from compression_worker.prune.structure import macs_of
    from edgefer.jobs.architectures import PRESETS
    from edgefer.registry.signing import ManifestSigner

    full = 2 * macs_of(PRESETS["ean-xs"])  # the mirror-averaged graph runs it twice
    budget = int(0.6 * full)
    assert registry_cli(["--redis-url", redis_server.url, "--fleet", "zero", "profile", "set", "--max-macs", str(budget),
                         "--description", "pi zero"]) == 0
    assert registry_cli(["--redis-url", redis_server.url, "--fleet", "zero", "profile", "show"]) == 0
    assert "pi zero" in capsys.readouterr().out

    client = connect(RegistryAccess(redis_url=redis_server.url))
    fleet_a = ModelRegistry(client, "default")
    served_a = fleet_a.publish(linear_onnx(), "a-model", {"name": "faces", "dtype": "float32", "shape": ["N", 1, 48, 48]},
                               {}, ManifestSigner(signing_keys[0]), promote=True)
    worker = make_worker(redis_server, signing_keys, tmp_path)
    assert run_job(worker, redis_server, toy_npz, "small", *TINY, "--target-fleet", "zero") == "published"

    record = worker.status.get("small")
    steps = ledger(tmp_path, "small")
    assert steps["prune"]["target"] == pytest.approx(1 - budget / 2 * 0.98 / macs_of(PRESETS["ean-xs"]))
    assert record["gate"]["config"]["budgets"]["max_macs"] == budget
    assert record["evaluation"]["candidate"]["macs"] <= budget
    assert 0 <= record["evaluation"]["candidate"]["macro_recall"] <= 1
    assert record["evaluation"]["serving"] is None  # fleet zero served nothing yet: fleet A's model is not its baseline

    zero = ModelRegistry(client, "zero")
    assert [m.version for m in zero.versions()] == [1] and zero.desired().version == 1
    assert [m.version for m in fleet_a.versions()] == [served_a.version]  # fleet A: untouched
    assert fleet_a.desired().version == served_a.version


def test_a_node_of_another_fleet_never_serves_the_jobs_model(node_fleet, redis_server, signing_keys, tmp_path, toy_npz):
    registry, signer, start = node_fleet
    served = registry.publish(linear_onnx(), "a-model", {"name": "faces", "dtype": "float32", "shape": ["N", 1, 48, 48]},
                              {}, signer, promote=True)
    (node,) = start(1)
    assert node.wait_version(str(served.version))
    worker = make_worker(redis_server, signing_keys, tmp_path)
    assert run_job(worker, redis_server, toy_npz, "for-b", *TINY, "--target-fleet", "b", "--prune-target", "0.5") == "published"
    assert ModelRegistry(worker.client, "b").manifest(1).fleet == "b"
    assert not node.wait_version("2", timeout_s=3) and node.served_model()[1] == served.sha256


def test_the_gate_refuses_a_candidate_that_gives_up_one_class() -> None:
    serving = {"version": 3, "accuracy": 0.65, "recall": [0.55, 0.40, 0.45, 0.85, 0.50, 0.78, 0.65]}
    collapsed = {"accuracy": 0.66, "recall": [0.58, 0.0, 0.48, 0.88, 0.53, 0.80, 0.68], "latency_ms": 0.5,
                 "size_bytes": 1000, "macs": 1000}
    decision = decide(GateConfig(max_recall_drop=0.08), collapsed, serving)
    assert not decision.passed
    assert decision.reasons == [f"recall of {CLASSES[1]} 0.0% fell more than 8 points below the serving version's 40.0%"]
    assert decide(GateConfig(max_recall_drop=0.08), {**collapsed, "recall": serving["recall"]}, serving).passed


def test_a_profile_that_cannot_be_read_is_named(redis_server, capsys) -> None:
    client = connect(RegistryAccess(redis_url=redis_server.url))
    client.set(ModelRegistry(client, "x").keys.profile, json.dumps({"max_macs": "many"}))
    assert registry_cli(["--redis-url", redis_server.url, "--fleet", "x", "profile", "show"]) == 2
    assert "fleet profile setting max_macs: 'many' is not int" in capsys.readouterr().err
    assert FleetProfile.from_json(FleetProfile(max_macs=7).to_json()).max_macs == 7


def test_the_lineage_is_signed_and_manifests_signed_before_it_existed_still_verify(signing_keys) -> None:
    from dataclasses import replace

    from edgefer.registry.manifest import EXPECTED_INPUT, Manifest, ManifestError, new_manifest
    from edgefer.registry.signing import ManifestSigner, ManifestVerifier

    signer, verifier = ManifestSigner(signing_keys[0]), ManifestVerifier(signing_keys[1])
    old = signer.sign(new_manifest(b"onnx", 1, "m", EXPECTED_INPUT, {}, None, "default", "e"))
    stored_before = json.loads(old.to_json())
    del stored_before["lineage"]  # what a registry written before the field holds
    verifier.verify(Manifest.from_json(json.dumps(stored_before)))

    signed = signer.sign(new_manifest(b"onnx", 2, "m", EXPECTED_INPUT, {}, 1, "default", "e", {"teacher": "ab" * 32}))
    verifier.verify(signed)
    with pytest.raises(ManifestError):
        verifier.verify(replace(signed, lineage={"teacher": "cd" * 32}))


def test_an_operator_adds_a_checkpoint_and_a_graph_to_the_lineage(tmp_path: Path, toy_npz: Path, capsys) -> None:
    """`edgefer-worker lineage add` measures the model on the held-back faces every job of that data uses, names
    its architecture, keeps it once; `lineage list` shows it; a file that is no model is refused by name."""
    from compression_worker.cli import main as worker_cli
    from compression_worker.model.ean import EAN
    from compression_worker.training.checkpoint import save_model
    from edgefer.jobs.architectures import PRESETS

    checkpoint = tmp_path / "teacher.pt"
    save_model(EAN(PRESETS["ean-xs"]), checkpoint)
    graph = tmp_path / "teacher.onnx"
    graph.write_bytes(linear_onnx())
    folder = tmp_path / "lineage"
    common = ["--dir", str(folder), "--data", str(toy_npz), "--threads", "1"]
    assert worker_cli(["lineage", "add", "--model", str(checkpoint), *common]) == 0
    assert worker_cli(["lineage", "add", "--model", str(graph), *common]) == 0
    assert worker_cli(["lineage", "add", "--model", str(checkpoint), *common]) == 0  # the same bytes: kept once
    records = {a.arch: a for a in LineageStore(folder).records()}
    assert set(records) == {"ean-xs", "onnx"} and len(list(folder.glob("*.pt"))) == 1
    assert all(a.data == DataConfig(toy_npz).identity() and 0 <= a.held_back_accuracy <= 1 for a in records.values())
    assert worker_cli(["lineage", "list", "--dir", str(folder)]) == 0
    assert records["ean-xs"].sha256[:12] in capsys.readouterr().out

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert worker_cli(["lineage", "add", "--model", str(junk), *common]) != 0
    assert "junk.pt" in capsys.readouterr().err


def ship_teacher(folder: Path, name: str, data: Path, accuracy: float, seed: int = 0) -> dict:
    """A small VGG graph and the card a shipped teacher has (trained on `data`, split as a job splits it)."""
    import torch

    from compression_worker.export import export_onnx
    from compression_worker.model.teacher_nets import FaceVGG, TeacherConfig

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    graph = export_onnx(FaceVGG(TeacherConfig(widths=(8, 16, 24, 32), depths=(1, 1, 1, 1))).eval(), folder / f"{name}.onnx")
    config = DataConfig(train_path=data)
    training = {"data_identity": config.identity(), "split": config.split_rule(), "best_val_acc_hflip": accuracy}
    card = {"name": name, "file_sha256": file_sha256(graph), "training": training}
    (folder / f"{name}.json").write_text(json.dumps(card))
    return card


def test_a_shipped_teacher_is_adopted_at_start_and_picked_by_teacher_best(redis_server, signing_keys, tmp_path,
                                                                          toy_npz, caplog) -> None:
    shipped = tmp_path / "models" / "teachers"
    card = ship_teacher(shipped, "vgg", toy_npz, 0.99)
    (shipped / "stale.onnx").write_bytes(b"other bytes")
    (shipped / "stale.json").write_text(json.dumps({**card, "name": "stale"}))  # its card names other bytes

    worker = make_worker(redis_server, signing_keys, tmp_path)
    adopted = adopt_shipped_teachers(worker.lineage, shipped)
    assert [a.job_id for a in adopted] == ["shipped:vgg"] and "stale.onnx is missing or is not" in caplog.text
    assert adopt_shipped_teachers(worker.lineage, shipped)[0] == adopted[0]  # a restart adds nothing twice
    assert run_job(worker, redis_server, toy_npz, "from-shipped", *TINY) == "published"  # teacher=best, the default
    teacher = ledger(tmp_path, "from-shipped")["teacher"]
    assert teacher["source"] == "lineage" and teacher["sha256"] == adopted[0].sha256


def test_teacher_best_with_an_ensemble_distils_and_prunes_from_the_most_accurate_shipped_teachers(
        redis_server, signing_keys, tmp_path, toy_npz) -> None:
    shipped = tmp_path / "models" / "teachers"
    accuracies = {"weak": 0.5, "strong": 0.9, "middle": 0.7}
    for seed, (name, accuracy) in enumerate(accuracies.items()):
        ship_teacher(shipped, name, toy_npz, accuracy, seed)
    worker = make_worker(redis_server, signing_keys, tmp_path)
    adopted = {a.job_id: a.sha256 for a in adopt_shipped_teachers(worker.lineage, shipped)}
    flags = [*TINY, "--teacher.ensemble", "2", "--prune-target", "0.3", "--distill.views", "2", "--prune.views", "2"]
    assert run_job(worker, redis_server, toy_npz, "pair", *flags) == "published"
    stages = ledger(tmp_path, "pair")
    assert stages["teacher"]["members"] == [adopted["shipped:strong"], adopted["shipped:middle"]]
    assert len(stages["teacher"]["models"]) == 2
    assert stages["distill"]["source"] == "trained"
    prune = json.loads((tmp_path / "jobs" / "pair" / "prune" / "prune.json").read_text())
    assert prune["teacher"] == " + ".join(stages["teacher"]["models"])  # pruning learns from the pair too


def test_a_worker_started_before_redis_indexes_the_shipped_teachers_once_redis_is_up(signing_keys, tmp_path) -> None:
    import threading
    import time

    from edgefer.localfleet.ports import free_port
    from edgefer.localfleet.redis_server import RedisServer

    server = RedisServer(free_port(), tmp_path / "redis")
    settings = WorkerServiceSettings(redis_url=server.url, work_dir=tmp_path / "jobs", signing_key=signing_keys[0],
                                     metrics_port=0, threads=2, consumer="w1",
                                     shipped_teachers=Path(__file__).parent.parent / "models" / "teachers")
    worker = Worker(settings)
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    time.sleep(1.0)  # the first indexing fails: nothing listens yet
    server.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if any(a.job_id == "shipped:vgg13-fer" for a in LineageIndex(connect(RegistryAccess(redis_url=server.url))).all()):
                break
            time.sleep(0.3)
        else:
            pytest.fail("the shipped teacher was never indexed after Redis came up")
    finally:
        worker.stop.set()
        thread.join(timeout=10)
        server.stop()


def test_the_views_of_a_jobs_teacher_are_kept_for_the_next_job_with_that_teacher(redis_server, signing_keys, tmp_path,
                                                                                 toy_npz, capsys) -> None:
    worker = make_worker(redis_server, signing_keys, tmp_path)
    views = [*TINY, "--distill-mode", "views", "--distill.views", "2", "--prune.views", "2"]
    assert run_job(worker, redis_server, toy_npz, "made", *views, "--teacher", "train") == "published"
    teacher = ledger(tmp_path, "made")["teacher"]["sha256"]
    (folder,) = (worker.lineage.root / "views").iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["spec.json", "view0.npz", "view1.npz"]
    made = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    capsys.readouterr()
    assert run_job(worker, redis_server, toy_npz, "reused", *views, "--teacher", teacher, "--seed", "3") == "published"
    assert ledger(tmp_path, "reused")["distill"]["source"] == "trained"  # another seed: a new student...
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == made  # ...from the stored views
    assert "made" not in capsys.readouterr().out

    capsys.readouterr()
    assert jobs_cli(["--redis-url", redis_server.url, "submit", "--data", str(toy_npz), "--distill-mode", "views",
                     "--distill.view-cache", str(tmp_path)]) == 2
    assert "view_cache is for the distill and prune commands" in capsys.readouterr().err
