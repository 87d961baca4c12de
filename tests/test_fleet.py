"""Edge node processes following a real redis-server: convergence, catch-up, Redis crashes, cached restarts."""

from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest

from edgefer.cli.registry import main as registry_cli
from edgefer.localfleet.edge_nodes import EdgeNodeProcess
from edgefer.registry.connection import RegistryAccess, connect
from edgefer.registry.manifest import EXPECTED_INPUT
from edgefer.registry.signing import ManifestSigner
from edgefer.registry.store import ModelRegistry
from edgefer.v1 import edge_pb2, edge_pb2_grpc
from tests.conftest import BASELINE_ONNX


@pytest.fixture
def fleet(node_fleet):
    """3 node processes; yields (registry, signer, nodes)."""
    registry, signer, start = node_fleet
    return registry, signer, start(3)


def publish(registry: ModelRegistry, signer: ManifestSigner) -> str:
    return str(registry.publish(BASELINE_ONNX.read_bytes(), "ean", EXPECTED_INPUT, {}, signer, promote=True).version)


def classify_ok(node: EdgeNodeProcess) -> bool:
    face = np.full((48, 48), 120, np.uint8)
    frame = edge_pb2.Frame(raw=edge_pb2.RawImage(width=48, height=48, format=edge_pb2.PIXEL_FORMAT_GRAY, pixels=face.tobytes()),
                           is_face_crop=True)
    with grpc.insecure_channel(node.target) as channel:
        reply = edge_pb2_grpc.EdgeFerStub(channel).Classify(edge_pb2.ClassifyRequest(frame=frame), timeout=5)
    return len(reply.result.faces) == 1


def test_publish_converges_and_the_status_table_says_so(fleet, redis_server, capsys) -> None:
    registry, signer, nodes = fleet
    version = publish(registry, signer)
    assert all(node.wait_version(version) for node in nodes)
    assert registry_cli(["--redis-url", redis_server.url, "status", "--wait", "--timeout", "10", "--interval", "0.2"]) == 0
    table = capsys.readouterr().out
    assert "3 nodes, 3 live, converged: yes" in table and "node-2" in table


def test_a_node_offline_during_two_publishes_catches_up_on_restart(fleet) -> None:
    registry, signer, nodes = fleet
    first = publish(registry, signer)
    assert all(node.wait_version(first) for node in nodes)
    nodes[2].stop()
    publish(registry, signer)
    latest = publish(registry, signer)
    assert all(node.wait_version(latest) for node in nodes[:2])
    nodes[2].start()
    assert nodes[2].wait_version(latest)


def test_redis_crash_nodes_keep_serving_and_converge_after_restart(fleet, redis_server) -> None:
    registry, signer, nodes = fleet
    before = publish(registry, signer)
    assert all(node.wait_version(before) for node in nodes)
    redis_server.kill()
    failures: list[BaseException] = []

    def keep_asking(node: EdgeNodeProcess) -> None:
        try:
            for _ in range(10):
                assert classify_ok(node)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            failures.append(exc)

    askers = [threading.Thread(target=keep_asking, args=(n,)) for n in nodes]
    for t in askers:
        t.start()
    for t in askers:
        t.join()
    assert not failures and all(node.served_version() == before for node in nodes)
    redis_server.start()  # same port, same append-only file
    after = publish(ModelRegistry(connect(RegistryAccess(redis_url=redis_server.url)), "default"), signer)
    assert all(node.wait_version(after, timeout_s=30) for node in nodes)


def test_a_node_restarted_while_redis_is_down_serves_its_cached_model(fleet, redis_server) -> None:
    registry, signer, nodes = fleet
    version = publish(registry, signer)
    assert nodes[0].wait_version(version)
    nodes[0].stop()
    redis_server.kill()
    nodes[0].start()
    assert nodes[0].wait_version(version)
    assert classify_ok(nodes[0])
