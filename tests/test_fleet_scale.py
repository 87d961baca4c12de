"""What keeps one Redis sane under a large fleet: heartbeats and fetches that spread with the fleet's size,
reconnects with full jitter, and nodes that read from a replica (real redis-servers, real node processes)."""

from __future__ import annotations

import random
import time
from pathlib import Path

from edgefer.backoff import Backoff
from edgefer.localfleet.edge_nodes import EdgeNodeProcess
from edgefer.localfleet.redis_server import RedisServer
from edgefer.registry.connection import RegistryAccess, connect
from edgefer.registry.manifest import EXPECTED_INPUT
from edgefer.registry.signing import ManifestSigner
from edgefer.registry.status import announce_spread, heartbeat_interval
from edgefer.registry.store import ModelRegistry
from tests.conftest import FAST_SYNC, free_port, linear_onnx


def test_heartbeats_and_fetches_spread_with_the_fleet_size() -> None:
    assert heartbeat_interval(5.0, 8) == heartbeat_interval(5.0, 1000) == 5.0
    assert heartbeat_interval(5.0, 10_000) == 50.0  # 200 status writes a second at most
    assert announce_spread(8, 1.0, 10.0) < 0.01 and announce_spread(1000, 1.0, 10.0) == 1.0
    assert announce_spread(100_000, 1.0, 10.0) == 10.0


def test_reconnects_use_the_whole_jitter_window() -> None:
    backoff = Backoff(0.2, 10.0, random.Random(0))
    delays = [backoff.next_delay() for _ in range(200)]
    assert all(0 <= d <= 10.0 for d in delays)
    late = delays[10:]  # at the cap: spread over [0, 10], not bunched in [5, 10]
    assert min(late) < 2.5 and max(late) > 7.5


def test_a_node_in_a_large_fleet_heartbeats_less_often(redis_server, signing_keys, tmp_path: Path) -> None:
    registry = ModelRegistry(connect(RegistryAccess(redis_url=redis_server.url)), "default")
    registry.client.zadd(registry.keys.nodes, {f"other-{i}": time.time() for i in range(9_999)})  # 10,000 with ours
    node = EdgeNodeProcess("big-fleet", free_port(), redis_server.url, signing_keys[1], tmp_path / "cache",
                           extra_args=FAST_SYNC, log_path=tmp_path / "node.log").start()
    try:
        key = registry.keys.node_status("big-fleet")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and registry.client.pttl(key) < 10_000:
            time.sleep(0.2)
        assert registry.client.pttl(key) > 100_000  # TTL = 3 heartbeats of 50 s (the node's own setting: 0.5 s)
    finally:
        node.stop()


def test_nodes_read_from_a_replica_and_report_to_the_primary(redis_server, signing_keys, tmp_path: Path) -> None:
    replica = RedisServer(free_port(), tmp_path / "replica", replica_of=redis_server.port).start()
    try:
        primary = ModelRegistry(connect(RegistryAccess(redis_url=redis_server.url)), "default")
        node = EdgeNodeProcess("reader", free_port(), redis_server.url, signing_keys[1], tmp_path / "cache",
                               extra_args=[*FAST_SYNC, "--redis-read-url", replica.url],
                               log_path=tmp_path / "node.log").start()
        try:
            published = primary.publish(linear_onnx(), "m", EXPECTED_INPUT, {}, ManifestSigner(signing_keys[0]),
                                        promote=True)
            assert node.wait_version("1", sha256=published.sha256)
            status = primary.node_statuses()[1]["reader"]
            assert status is not None and status.sha256 == published.sha256
            clients = connect(RegistryAccess(redis_url=replica.url)).client_list()
            assert any(c["cmd"] in ("subscribe", "ssubscribe") or int(c.get("sub", 0)) > 0 for c in clients)
        finally:
            node.stop()
    finally:
        replica.kill()
