"""`edgefer-demo`: a whole fleet on this machine, without Docker, and a live model rollout.

It starts a redis-server, two edge nodes and the compression worker service (local processes),
publishes the shipped baseline as version 1 and the pruned EAN (what an edge node exists to run) as version 2,
serving 2, streams faces to both nodes from two device clients,
then has the worker train, distil, prune, quantize, gate and publish a new version mid-stream, and
shows both nodes swapping to it with no failed request. It ends with a summary per node and stops
every process it started, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from itertools import takewhile
from pathlib import Path

import numpy as np

from edgefer.datasets import load_faces
from edgefer.jobs.client import follow_job, submit_job
from edgefer.jobs.spec import JobSpec
from edgefer.jobs.status import JobStatusStore
from edgefer.localfleet.edge_nodes import EdgeNodeProcess
from edgefer.localfleet.ports import free_port
from edgefer.localfleet.redis_server import RedisServer
from edgefer.registry.connection import RegistryAccess, connect
from edgefer.registry.manifest import EXPECTED_INPUT
from edgefer.registry.signing import ManifestSigner, generate_keypair
from edgefer.registry.store import ModelRegistry
from edgefer.registry.version import version_label
from services.client.main import DeviceClient, StreamStats
from services.client.samples import labelled_sample_faces
from services.client.sources import open_source

REPO = Path(__file__).resolve().parent.parent.parent
SHARED_TRAIN = REPO.parent / "shared" / "data" / "fer2013" / "train.npz"


def training_data(folder: Path, short: bool) -> tuple[Path, str]:
    """A small training set for the demo job: real FER2013 faces when ../shared has them, else drawn ones."""
    path = folder / "demo-train.npz"
    if SHARED_TRAIN.exists() and not short:
        faces = load_faces(SHARED_TRAIN)
        keep = np.random.default_rng(0).permutation(len(faces.y))[:3000]
        np.savez(path, x=faces.x[keep], y=faces.y[keep])
        return path, f"3,000 FER2013 faces from {SHARED_TRAIN}"
    x, y = labelled_sample_faces(700)
    np.savez(path, x=x, y=y)
    return path, "700 drawn sample faces (no ../shared needed)"


def print_stages() -> Callable[[dict], None]:
    """A follow_job callback that prints each stage of the worker's job once, as it starts."""
    seen: set[str] = set()

    def show(record: dict) -> None:
        stage = record.get("stage")
        if stage and stage not in seen:
            seen.add(stage)
            print(f"  worker: stage {stage} ({record.get('percent', 0):.0f}%)", flush=True)

    return show


def wait_serving(nodes: list[EdgeNodeProcess], version: str, timeout_s: float) -> dict[str, float]:
    """Seconds until each node answered with `version`."""
    start, seen = time.monotonic(), {}
    while len(seen) < len(nodes) and time.monotonic() - start < timeout_s:
        for node in nodes:
            if node.node_id not in seen and node.served_version() == version:
                seen[node.node_id] = time.monotonic() - start
        time.sleep(0.05)
    return seen


def summary_table(stats: dict[str, StreamStats], seconds: float) -> str:
    lines = [f"{'node':<8} {'frames':>7} {'ok':>6} {'failed':>6} {'faces/s':>8} {'p50 ms':>7} {'p99 ms':>7}  versions served"]
    for node_id, s in stats.items():
        ok = s.statuses.get("ok", 0)
        failed = s.failed + max(0, s.sent - sum(s.statuses.values()))  # refused, or never answered
        lat = np.asarray(s.latencies_ms or [0.0])
        lines.append(f"{node_id:<8} {s.sent:>7} {ok:>6} {failed:>6} {ok / seconds:>8.1f} {np.percentile(lat, 50):>7.1f} "
                     f"{np.percentile(lat, 99):>7.1f}  {', '.join(sorted(s.versions))}")
    return "\n".join(lines)


def run(args: argparse.Namespace, stack: ExitStack, work: Path) -> int:
    print(f"EdgeFER local fleet demo (work files in {work})", flush=True)
    generate_keypair(work / "worker.pem", work / "worker.pub")
    redis_server = RedisServer(free_port(), work / "redis").start()
    stack.callback(redis_server.stop)
    registry = ModelRegistry(connect(RegistryAccess(redis_url=redis_server.url)))
    print(f"redis-server on {redis_server.url}", flush=True)
    signer = ManifestSigner(work / "worker.pem")
    for name, promote in (("ean-baseline.onnx", False), ("ean-pruned.onnx", True)):
        path = REPO / "models" / name
        first = registry.publish(path.read_bytes(), path.stem, EXPECTED_INPUT, {}, signer, promote=promote)
        print(f"published {name} as version {first.version}" + (", served" if promote else ", selectable"), flush=True)
    serving = version_label(first.version)
    nodes = [EdgeNodeProcess(f"edge-{i}", free_port(), redis_server.url, work / "worker.pub", work / f"cache-{i}",
                             extra_args=["--heartbeat-seconds", "1"], log_path=work / f"edge-{i}.log").start() for i in (1, 2)]
    for node in nodes:
        stack.callback(node.stop)
    if len(wait_serving(nodes, serving, 60)) < 2:
        print("edge nodes did not start; see their logs in", work, file=sys.stderr)
        return 1
    print("edge nodes " + ", ".join(f"{n.node_id} on {n.target}" for n in nodes) + f" serve version {serving}", flush=True)
    worker_cmd = [sys.executable, "-m", "compression_worker.service.worker", "--redis-url", redis_server.url, "--work-dir",
                  str(work / "jobs"), "--signing-key", str(work / "worker.pem"), "--metrics-port", "0", "--threads", "1",
                  "--accuracy-tolerance", "1.0", "--max-recall-drop", "1.0", "--max-latency-ms", "50"]
    with open(work / "worker.log", "ab") as log:
        worker = subprocess.Popen(worker_cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    stack.callback(lambda: (worker.send_signal(signal.SIGTERM), worker.wait(timeout=30)))
    print("compression worker started (demo gate: accepts any held-back accuracy and recall so the swap shows; "
          "the production default allows 0.5 points below the serving model)", flush=True)

    stop = threading.Event()
    stats: dict[str, StreamStats] = {}
    threads = []
    for i, node in enumerate(nodes):
        client = DeviceClient(node.target, args.fps, quiet=True)
        stats[node.node_id] = client.stats
        frames = takewhile(lambda _: not stop.is_set(), open_source(args.source, loop=True))
        threads.append(threading.Thread(target=client.run, args=(frames,), daemon=True))
    started = time.monotonic()
    for t in threads:
        t.start()
    print(f"device clients stream '{args.source}' to both nodes at {args.fps:g} frames/s each", flush=True)
    time.sleep(args.warmup_seconds)
    data, described = training_data(work, args.short)
    recipe = {"teacher": {"epochs": 2}, "optim": {"epochs": 1}, "distill": {"arch": "ean-xs", "rounds": 1},
              "prune": {"target_macs_reduction": 0.5, "local_epochs": 1, "finetune_epochs": 1}}
    job = {"data": str(data), "job_id": "demo", "recipe": recipe}
    submit_job(registry.client, JobSpec.parse(json.dumps(job)), submitter="demo")
    print(f"job submitted to the worker: teacher -> ITS -> prune -> INT8 -> gate -> publish, on {described}", flush=True)
    record = follow_job(JobStatusStore(registry.client), "demo", print_stages(), poll_s=0.3, timeout_s=args.job_timeout)
    if record.get("state") != "published":
        stop.set()
        print(f"the job ended {record.get('state')}: {record.get('error') or record.get('gate')}", file=sys.stderr)
        return 1
    version = version_label(record["published_version"])
    swapped = wait_serving(nodes, version, 30)
    print("nodes swapped to version " + version + ": " + ", ".join(f"{n} after {s:.2f}s" for n, s in swapped.items()), flush=True)
    time.sleep(args.after_seconds)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    seconds = time.monotonic() - started
    print("\n" + summary_table(stats, seconds))
    failed = sum(s.failed for s in stats.values())
    both = len(swapped) == 2 and all(version in s.versions and serving in s.versions for s in stats.values())
    print(f"\n{'OK' if both and not failed else 'PROBLEM'}: {failed} failed requests; both nodes served versions {serving} and {version}"
          if both else f"\nPROBLEM: not every node served both versions ({failed} failed requests)")
    return 0 if both and not failed else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgefer-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="samples", help="frames for the clients: 'samples', a video, camera index, "
                        "image folder or faces.npz")
    parser.add_argument("--fps", type=float, default=15.0, help="frames per second each client sends (default: %(default)s)")
    parser.add_argument("--warmup-seconds", type=float, default=5.0, help="streaming before the job is submitted")
    parser.add_argument("--after-seconds", type=float, default=5.0, help="streaming after the swap")
    parser.add_argument("--job-timeout", type=float, default=600.0, help="seconds the compression job may take")
    parser.add_argument("--short", action="store_true", help="drawn training faces only and short phases (tests)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the work files (logs, keys, job) in this folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with ExitStack() as stack:
        work = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgefer-demo-")))
        work.mkdir(parents=True, exist_ok=True)
        try:
            return run(args, stack, work)
        except KeyboardInterrupt:
            print("\ninterrupted: stopping every process the demo started", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
