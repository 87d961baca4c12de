"""Fleet scale: N simulated nodes behind one real redis-server, a rollout and a Redis restart; prints a table.

A simulated node is the node's real registry code (services.edge.sync_agent.SyncAgent: pub/sub doorbell,
reconcile, manifest signature and identity checks, STRLEN, blob download, sha256, disk cache, status
heartbeats) with the onnxruntime load replaced by the sha256 check alone, so that 1,000+ fit on this
machine: `--processes` processes run N/processes agents each, one thread and two Redis connections per
agent, caches on tmpfs. Redis's own view (INFO: CPU, memory, clients, bytes sent, connections
received; SLOWLOG) is sampled every 0.2 s.

Per fleet size it measures
  boot      every agent started at once against a registry that holds the served version;
  rollout   publish + promote of a new version -> 50/99/100% of the agents serving it;
  restart   Redis killed, down for --outage s, restarted with its append-only file -> every agent
            connected again and every status record written after the restart naming the served bytes;
            the peak rate of new connections Redis accepted (per second);
  memory    Redis used_memory with `--versions` versions stored and N status records.

    python benchmarks/fleet_scale.py --nodes 8 100 500 1000 --processes 8
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import multiprocessing as mp
import queue
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from edgefer.localfleet.ports import free_port
from edgefer.localfleet.redis_server import RedisServer
from edgefer.registry.connection import RegistryAccess, connect
from edgefer.registry.manifest import EXPECTED_INPUT
from edgefer.registry.signing import ManifestSigner, TrustedKey, generate_keypair
from edgefer.registry.status import NodeStatus
from edgefer.registry.store import ModelRegistry
from edgefer.timestamps import utc_now_iso
from services.edge.metrics import EdgeMetrics
from services.edge.model_cache import ModelCache
from services.edge.model_holder import LoadedModel, ModelHolder
from services.edge.sync_agent import SyncAgent, SyncConfig

REPO = Path(__file__).resolve().parent.parent
FLEET = "sim"


# -- the simulated node (runs in the agent processes) ------------------------------------------------


def verify_only(blob: bytes, version: str, threads: int) -> LoadedModel:
    """What replaces the onnxruntime load: the bytes' sha256, nothing kept."""
    return LoadedModel(version, hashlib.sha256(blob).hexdigest(), None, utc_now_iso(), b"")  # type: ignore[arg-type]


@dataclass
class SimulatedNode:
    """The ServingNode a sync agent drives, minus gRPC: it reports every swap to the benchmark."""

    node_id: str
    events: mp.Queue
    port: int = 0
    holder: ModelHolder = field(default_factory=ModelHolder)
    metrics: EdgeMetrics = field(default_factory=EdgeMetrics)

    def swap(self, model: LoadedModel) -> None:
        self.holder.swap(model)
        self.events.put((self.node_id, model.sha256, time.time()))

    def rollback(self) -> LoadedModel:
        model = self.holder.rollback()
        self.events.put((self.node_id, model.sha256, time.time()))
        return model

    def set_serving(self, serving: bool) -> None:
        pass

    def stop(self, grace: float) -> None:
        pass


def run_agents(node_ids: list[str], redis_url: str, public_key: Path, cache_root: Path, events: mp.Queue,
               spread_per_1000_s: float) -> None:
    """One agent process: start its share of the fleet and run until terminated."""
    logging.basicConfig(level=logging.ERROR)  # the restart phase makes every agent warn; the table says it
    for node_id in node_ids:
        registry = ModelRegistry(connect(RegistryAccess(redis_url=redis_url)), FLEET)
        node = SimulatedNode(node_id, events)
        config = SyncConfig(node_id, announce_spread_per_1000_s=spread_per_1000_s)
        agent = SyncAgent(registry, TrustedKey(public_key), node, ModelCache(cache_root / node_id), config, loader=verify_only)
        agent.start()
    threading.Event().wait()


# -- Redis's view ----------------------------------------------------------------------------------


class RedisSampler(threading.Thread):
    """INFO every 0.2 s: (time, cpu seconds, used memory, clients, bytes sent, connections received, PING ms):
    the PING's round trip is what any other client (a heartbeat, the operator's CLI) waits meanwhile."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=0.2)
        self.samples: list[tuple[float, float, int, int, int, int, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            try:
                sent = time.perf_counter()
                self.client.ping()
                ping_ms = 1e3 * (time.perf_counter() - sent)
                info = self.client.info()
            except redis.RedisError:
                continue  # Redis is down (restart phase)
            self.samples.append((time.time(), info["used_cpu_user"] + info["used_cpu_sys"], info["used_memory"],
                                 info["connected_clients"], info["total_net_output_bytes"],
                                 info["total_connections_received"], ping_ms))

    def window(self, start: float, end: float) -> list[tuple]:
        """The samples from the last one before `start` to `end` (so a short window still has a delta)."""
        before = [s for s in self.samples if s[0] < start][-1:]
        return before + [s for s in self.samples if start <= s[0] <= end]


def delta(samples: list[tuple], index: int) -> float:
    return samples[-1][index] - samples[0][index] if len(samples) > 1 else 0.0


def peak_rate(samples: list[tuple], index: int, span_s: float = 1.0) -> float:
    """The largest increase of a counter over any `span_s` window, per second."""
    best = 0.0
    for i, first in enumerate(samples):
        for last in samples[i + 1:]:
            if last[0] - first[0] >= span_s:
                best = max(best, (last[index] - first[index]) / (last[0] - first[0]))
                break
    return best


# -- one fleet size --------------------------------------------------------------------------------


@dataclass
class Result:
    nodes: int
    boot_s: float
    rollout: dict[str, float]
    rollout_cpu_s: float
    rollout_mb_sent: float
    rollout_max_ping_ms: float
    idle_cpu_share: float
    restart_connected_s: float
    restart_converged_s: float
    restart_peak_connections_per_s: float
    restart_connections: int
    memory_mb: float
    peak_memory_mb: float
    peak_clients: int
    slowlog: int


def wait_served(events: mp.Queue, served: dict[str, str], sha256: str, count: int, since: float,
                timeout_s: float) -> list[float]:
    """Collect swap events until `count` nodes serve `sha256`; returns their delays after `since`."""
    delays = {n: 0.0 for n, s in served.items() if s == sha256}
    deadline = time.monotonic() + timeout_s
    while len(delays) < count and time.monotonic() < deadline:
        try:
            node_id, sha, at = events.get(timeout=0.5)
        except queue.Empty:
            continue
        served[node_id] = sha
        if sha == sha256:
            delays[node_id] = at - since
        else:
            delays.pop(node_id, None)
    return sorted(delays.values())


def percentile(sorted_values: list[float], share: float, total: int) -> float:
    """Time until `share` of `total` nodes: inf when fewer got there."""
    needed = max(1, int(round(share * total)))
    return sorted_values[needed - 1] if len(sorted_values) >= needed else float("inf")


def all_reported_since(registry: ModelRegistry, node_ids: list[str], since: float, sha256: str) -> bool:
    keys = [registry.keys.node_status(n) for n in node_ids]
    for start in range(0, len(keys), 500):
        for raw in registry.client.mget(keys[start:start + 500]):
            if raw is None:
                return False
            status = NodeStatus.from_json(raw)
            if status.heartbeat < since or status.sha256 != sha256:
                return False
    return True


def run_fleet(nodes: int, processes: int, versions: int, outage_s: float, spread_per_1000_s: float, blob: bytes,
              workdir: Path) -> Result:
    server = RedisServer(free_port(), workdir / "redis").start()
    sampler = RedisSampler(server.url)
    sampler.start()
    client = connect(RegistryAccess(redis_url=server.url))
    registry = ModelRegistry(client, FLEET)
    generate_keypair(workdir / "key.pem", workdir / "key.pub")
    signer = ManifestSigner(workdir / "key.pem")
    first = registry.publish(blob + b"\0" * 8, "v1", EXPECTED_INPUT, {}, signer, promote=True)

    node_ids = [f"sim-{i:05d}" for i in range(nodes)]
    events: mp.Queue = mp.get_context("spawn").Queue()
    served: dict[str, str] = {}
    ctx = mp.get_context("spawn")
    share = (nodes + processes - 1) // processes
    caches = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="edgefer-sim-"))  # the nodes' disks: tmpfs
    started = time.time()
    workers = [ctx.Process(target=run_agents, args=(node_ids[i:i + share], server.url, workdir / "key.pub", caches, events,
                                                    spread_per_1000_s),
                           daemon=True)
               for i in range(0, nodes, share)]
    try:
        for w in workers:
            w.start()
        booted = wait_served(events, served, first.sha256, nodes, started, 180)
        boot_s = booted[-1] if len(booted) == nodes else float("inf")
        quiet = time.time()
        time.sleep(6)  # steady state: heartbeats and pub/sub only
        steady = sampler.window(quiet + 1, time.time())
        idle_cpu = delta(steady, 1) / max(delta(steady, 0), 1e-9)

        t0 = time.time()
        second = registry.publish(blob + (2).to_bytes(8, "big"), "v2", EXPECTED_INPUT, {}, signer, promote=True)
        delays = wait_served(events, served, second.sha256, nodes, t0, 60)
        rollout = {f"p{int(q * 100)}": percentile(delays, q, nodes) for q in (0.5, 0.99, 1.0)}
        time.sleep(0.5)
        window = sampler.window(t0, time.time())
        rollout_cpu, rollout_sent = delta(window, 1), delta(window, 4) / 1e6
        rollout_ping = max(sample[6] for sample in window)

        server.kill()
        time.sleep(outage_s)
        server.start()
        restarted = time.time()
        connected_s = converged_s = float("inf")
        while time.time() - restarted < 120:
            clients = int(client.info("clients")["connected_clients"])
            if connected_s == float("inf") and clients >= 2 * nodes:
                connected_s = time.time() - restarted
            if converged_s == float("inf") and all_reported_since(registry, node_ids, restarted, second.sha256):
                converged_s = time.time() - restarted
            if connected_s < float("inf") and converged_s < float("inf"):
                break
            time.sleep(0.2)
        time.sleep(0.5)
        # The restarted server counts connections from 0: start the window there.
        recovery = [(restarted, 0, 0, 0, 0, 0, 0)] + [s for s in sampler.samples if s[0] >= restarted]
        peak_connections = peak_rate(recovery, 5)
        connections = int(recovery[-1][5])

        for k in range(3, versions + 1):
            registry.publish(blob + k.to_bytes(8, "big"), f"v{k}", EXPECTED_INPUT, {}, signer)
        time.sleep(1)
        memory = client.info("memory")
        slowlog = int(client.slowlog_len())
        peak_clients = max((s[3] for s in sampler.samples), default=0)
        return Result(nodes, boot_s, rollout, rollout_cpu, rollout_sent, rollout_ping, idle_cpu, connected_s, converged_s, peak_connections,
                      connections, memory["used_memory"] / 2**20, memory["used_memory_peak"] / 2**20, peak_clients,
                      slowlog)
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.join()
        sampler.stop.set()
        server.kill()
        shutil.rmtree(caches, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[8, 100, 500, 1000])
    parser.add_argument("--processes", type=int, default=8, help="agent processes (each runs N/processes agents)")
    parser.add_argument("--versions", type=int, default=20, help="versions stored for the memory row")
    parser.add_argument("--outage", type=float, default=5.0, help="seconds Redis stays down in the restart phase")
    parser.add_argument("--spread-per-1000", type=float, default=SyncConfig.announce_spread_per_1000_s,
                        help="seconds over which 1,000 nodes spread their fetches after an announcement (0: none)")
    parser.add_argument("--model", type=Path, default=REPO / "models" / "ean-pruned.onnx", help="the blob published")
    args = parser.parse_args()
    blob = args.model.read_bytes()
    print(f"blob {len(blob) / 1e3:.0f} kB, {args.processes} agent processes, Redis down {args.outage:g} s in the restart phase, "
          f"fetches spread over {args.spread_per_1000:g} s per 1,000 nodes")
    header = ("nodes", "boot s", "idle redis cpu", "roll p50", "p99", "p100", "redis cpu s", "MB sent", "max ping ms", "reconnect s", "reconverge s",
              "peak conn/s", "conns", "mem MB", "peak MB", "clients", "slowlog")
    print(" | ".join(header))
    for n in args.nodes:
        with tempfile.TemporaryDirectory() as tmp:
            r = run_fleet(n, min(args.processes, n), args.versions, args.outage, args.spread_per_1000, blob, Path(tmp))
        print(f"{r.nodes} | {r.boot_s:.2f} | {100 * r.idle_cpu_share:.1f}% | {r.rollout['p50']:.2f} | {r.rollout['p99']:.2f} | "
              f"{r.rollout['p100']:.2f} | {r.rollout_cpu_s:.2f} | {r.rollout_mb_sent:.0f} | {r.rollout_max_ping_ms:.0f} | "
              f"{r.restart_connected_s:.1f} | {r.restart_converged_s:.1f} | "
              f"{r.restart_peak_connections_per_s:.0f} | {r.restart_connections} | {r.memory_mb:.1f} | {r.peak_memory_mb:.1f} | "
              f"{r.peak_clients} | {r.slowlog}", flush=True)


if __name__ == "__main__":
    main()
