"""The worker service's default job on real data, for two device classes; prints a table.

A real redis-server; the default fleet serves the shipped pruned EAN (models/ean-pruned.onnx), the lineage
holds the shipped teachers (models/teachers/, adopted as the worker does at start; `teacher=best` picks the most
accurate), and fleet `half` has a profile with half the default MAC budget. The in-process worker then runs the
default job for the default fleet, and the same job for fleet `half`, which reuses the first job's distilled
student (same teacher, same recipe) and only prunes further.
Everything lives in --workdir (Redis data included), so a rerun resumes where a killed run stopped.

    python benchmarks/worker_jobs.py --data ../shared/data/fer2013 --workdir runs/bench-jobs --threads 2
    python benchmarks/worker_jobs.py --fleets default     # the default fleet's job only
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from compression_worker.lineage_store import LineageStore, adopt_shipped_teachers
from compression_worker.service.settings import WorkerServiceSettings
from compression_worker.service.worker import Worker
from edgefer.cli.registry import read_model
from edgefer.jobs.lineage import LineageIndex
from edgefer.jobs.queue import JobQueue
from edgefer.jobs.spec import JobSpec
from edgefer.jobs.status import ENDED
from edgefer.localfleet.ports import free_port
from edgefer.localfleet.redis_server import RedisServer
from edgefer.registry.profile import FleetProfile
from edgefer.registry.signing import generate_keypair
from edgefer.registry.store import ModelRegistry

REPO = Path(__file__).resolve().parent.parent


def prepare(worker: Worker, serving: Path, teachers: Path, half_macs: int) -> None:
    """The fleets, their serving model and profile, and the shipped teachers in the lineage (each once)."""
    default = worker.registry
    if default.desired() is None:
        blob, input_spec, metrics = read_model(serving, None)
        default.publish(blob, serving.stem, input_spec, metrics, worker.signer, promote=True)
    ModelRegistry(worker.client, "half").set_profile(FleetProfile(max_macs=half_macs, description="half the MAC budget"))
    for artefact in adopt_shipped_teachers(worker.lineage, teachers):
        print(f"lineage teacher {artefact.job_id}: held back {100 * artefact.held_back_accuracy:.2f}%")


def run_job(worker: Worker, spec: JobSpec) -> dict:
    """Submit the job once (a rerun finds it pending and resumes it) and work until it has ended."""
    if worker.status.get(spec.job_id) is None:
        worker.status.update(spec.job_id, state="queued", spec=spec.to_json())
        JobQueue(worker.client, consumer="bench").submit(spec.to_json())
    while (worker.status.get(spec.job_id) or {}).get("state") not in ENDED:
        delivery = worker.queue.next(block_ms=1000, claim_idle_ms=1)
        if delivery is not None:
            worker.handle(delivery)
    return worker.status.get(spec.job_id)


def report(name: str, record: dict, ledger: dict) -> list[str]:
    evaluation = record.get("evaluation") or {}
    candidate, serving = evaluation.get("candidate") or {}, evaluation.get("serving")
    lines = [f"\n{name}: {record.get('state')} (gate: {'; '.join(record['gate']['reasons']) or 'passed'})"
             if record.get("gate") else f"\n{name}: {record.get('state')} {record.get('error', '')}"]
    lines.append(f"{'stage':<10} {'seconds':>8}  note")
    for stage, out in ledger.items():
        note = out.get("source", "") + (f" target {out['target']:.3f}" if "target" in out else "")
        lines.append(f"{stage:<10} {out.get('seconds', 0):>8.0f}  {note}")
    lines.append(f"{'total':<10} {sum(o.get('seconds', 0) for o in ledger.values()):>8.0f}")
    if candidate:
        lines.append(f"candidate: held back {100 * candidate['accuracy']:.2f}% (macro recall {100 * candidate['macro_recall']:.2f}%), "
                     f"{candidate['macs'] / 1e6:.2f}M MACs, {candidate['params']:,} params, {candidate['latency_ms']:.3f} ms")
    if serving:
        lines.append(f"serving v{serving['version']}: held back {100 * serving['accuracy']:.2f}% "
                     f"(macro recall {100 * serving['macro_recall']:.2f}%)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "fer2013")
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "bench-jobs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--serving", type=Path, default=REPO / "models" / "ean-pruned.onnx")
    parser.add_argument("--teachers", type=Path, default=REPO / "models" / "teachers")
    parser.add_argument("--fleets", nargs="+", choices=("default", "half"), default=["default", "half"])
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    keys = args.workdir / "keys"
    if not (keys / "worker.pem").exists():
        generate_keypair(keys / "worker.pem", keys / "worker.pub")
    redis = RedisServer(free_port(), args.workdir / "redis").start()
    try:
        settings = WorkerServiceSettings(redis_url=redis.url, work_dir=args.workdir / "jobs", signing_key=keys / "worker.pem",
                                         metrics_port=0, threads=args.threads, consumer="bench", device="cpu")
        torch.set_num_threads(settings.threads)
        worker = Worker(settings)
        half = FleetProfile().max_macs // 2
        prepare(worker, args.serving, args.teachers, half)
        train, test = str(args.data / "train.npz"), str(args.data / "test_public.npz")
        lines = []
        jobs = {"default": ("default fleet", JobSpec(train, "bench-default", test_data=test)),
                "half": ("fleet half", JobSpec(train, "bench-half", target_fleet="half", test_data=test))}
        for name, spec in (jobs[fleet] for fleet in args.fleets):
            record = run_job(worker, spec)
            ledger = json.loads((settings.work_dir / spec.job_id / "stages.json").read_text())
            card = json.loads(Path(ledger["export"]["onnx"]).with_suffix(".json").read_text())
            test_acc = card["evaluation"]["test_public"]["accuracy"]
            lines += report(name, record, ledger) + [f"published graph on test_public: {100 * test_acc:.2f}%"]
            (args.workdir / f"{spec.job_id}.json").write_text(json.dumps({"record": record, "ledger": ledger}, indent=2))
        print("\n".join(lines))
        print(f"\nlineage: {len(LineageStore(settings.lineage_dir, LineageIndex(worker.client)).records())} artefacts")
    finally:
        redis.stop()


if __name__ == "__main__":
    main()
