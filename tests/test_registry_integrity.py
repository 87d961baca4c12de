"""Registry faults an operator can cause or suffer, against a real redis-server and real node processes.

Each ends with every node serving exactly the bytes of the version it reports, following the registry
again without a restart, and `edgefer-registry status` telling the truth.
"""

from __future__ import annotations

import json
import shutil
import time

import onnx
import pytest

from edgefer.cli.registry import main as registry_cli
from edgefer.localfleet.edge_nodes import EdgeNodeProcess
from edgefer.registry.connection import RegistryAccess, connect
from edgefer.registry.manifest import EXPECTED_INPUT
from edgefer.registry.signing import ManifestSigner
from edgefer.registry.store import ModelRegistry, RegistryError
from tests.conftest import FAST_SYNC, free_port, linear_onnx


def model(k: int) -> bytes:
    """Distinct small valid models: model(1) and model(2) are different bytes."""
    return linear_onnx(scale=0.01 * k)


@pytest.fixture
def nodes(node_fleet):
    """2 node processes; yields (registry, signer, nodes)."""
    registry, signer, start = node_fleet
    return registry, signer, start(2)


def status_table(redis_url: str, capsys, *extra: str) -> tuple[int, str]:
    code = registry_cli(["--redis-url", redis_url, "--stale-after-s", "5", "status", *extra])
    return code, capsys.readouterr().out


def test_after_redis_loses_its_data_reused_numbers_never_serve_the_old_bytes(nodes, redis_server, capsys) -> None:
    registry, signer, fleet = nodes
    registry.publish(model(1), "a", EXPECTED_INPUT, {}, signer, promote=True)
    old = registry.publish(model(2), "b", EXPECTED_INPUT, {}, signer, promote=True)
    assert all(node.wait_version("2", sha256=old.sha256) for node in fleet)  # serving 2, holding 1 for rollback
    old_epoch = registry.current_epoch()

    registry.client.flushall()  # Redis restarted empty: no AOF, no RDB
    fresh = [registry.publish(model(k), f"new-{k}", EXPECTED_INPUT, {}, signer) for k in (3, 4, 5)]
    assert [m.version for m in fresh] == [1, 2, 3] and registry.current_epoch() != old_epoch
    registry.promote(1)  # the number the nodes hold for rollback: other bytes now
    assert all(node.wait_version("1", sha256=fresh[0].sha256) for node in fleet)
    registry.promote(2)  # the number the nodes served before the loss: other bytes now
    assert all(node.wait_version("2", sha256=fresh[1].sha256) for node in fleet)
    code, table = status_table(redis_server.url, capsys, "--wait", "--timeout", "10", "--interval", "0.2")
    assert code == 0 and "converged: yes" in table and fresh[1].sha256[:12] in table

    fleet[0].stop()  # the cache is keyed by sha256: a restart serves the same bytes under the same number
    fleet[0].start()
    assert fleet[0].wait_version("2", sha256=fresh[1].sha256)


def test_the_same_bytes_republished_under_a_new_number_are_served_without_a_download(nodes, redis_server) -> None:
    registry, signer, fleet = nodes
    first = registry.publish(model(1), "a", EXPECTED_INPUT, {}, signer, promote=True)
    assert all(node.wait_version("1", sha256=first.sha256) for node in fleet)
    registry.client.flushall()
    registry.publish(model(9), "other", EXPECTED_INPUT, {}, signer)
    again = registry.publish(model(1), "a-again", EXPECTED_INPUT, {}, signer)
    registry.client.delete(registry.keys.blob(again.version))  # nothing to download: the nodes hold these bytes
    registry.promote(again.version)
    assert all(node.wait_version(str(again.version), sha256=first.sha256) for node in fleet)


def test_a_manifest_copied_from_another_fleet_or_an_earlier_epoch_is_refused(redis_server, signing_keys, tmp_path) -> None:
    signer = ManifestSigner(signing_keys[0])
    client = connect(RegistryAccess(redis_url=redis_server.url))
    lab, shop = ModelRegistry(client, "lab"), ModelRegistry(client, "shop")
    serving = shop.publish(model(1), "shop", EXPECTED_INPUT, {}, signer, promote=True)
    foreign = lab.publish(model(2), "lab-only", EXPECTED_INPUT, {}, signer)
    node = EdgeNodeProcess("shop-1", free_port(), redis_server.url, signing_keys[1], tmp_path / "cache",
                           fleet="shop", extra_args=FAST_SYNC, log_path=tmp_path / "node.log").start()
    try:
        assert node.wait_version("1", sha256=serving.sha256)
        client.copy(lab.keys.manifest(foreign.version), shop.keys.manifest(7))  # a lab model pushed into the shop
        client.copy(lab.keys.blob(foreign.version), shop.keys.blob(7))
        shop.client.zadd(shop.keys.versions, {"7": time.time()})
        shop.promote(7)
        assert wait_for_error(shop, "shop-1", "signed for fleet lab")
        client.set(shop.keys.epoch, "0" * 32)  # as if version 1 had been restored into a registry rebuilt since
        shop.promote(1)
        assert wait_for_error(shop, "shop-1", "signed for epoch")
        assert node.served_model() == ("1", serving.sha256)
    finally:
        node.stop()


def wait_for_error(registry: ModelRegistry, node_id: str, text: str, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = registry.node_statuses()[1].get(node_id)
        if status is not None and text in status.last_error:
            return True
        time.sleep(0.1)
    return False


def test_publish_and_promote_are_one_transaction(redis_server, signing_keys) -> None:
    """A publish that cannot promote stores nothing; the job's retry stores and promotes (no half-done state)."""
    registry = ModelRegistry(connect(RegistryAccess(redis_url=redis_server.url)), "default")
    signer = ManifestSigner(signing_keys[0])
    registry.publish(model(1), "a", EXPECTED_INPUT, {}, signer, promote=True)
    registry.client.set(registry.keys.desired, "{broken")  # the promote half fails inside the transaction
    with pytest.raises(RegistryError, match="unreadable desired record"):
        registry.publish(model(2), "b", EXPECTED_INPUT, {}, signer, promote=True, idempotency_key="job-1")
    assert [m.version for m in registry.versions()] == [1]
    assert registry.client.get(registry.keys.published_by("job-1")) is None
    registry.promote(1, force=True)
    retried = registry.publish(model(2), "b", EXPECTED_INPUT, {}, signer, promote=True, idempotency_key="job-1")
    assert registry.desired().version == retried.version
    again = registry.publish(model(2), "b", EXPECTED_INPUT, {}, signer, promote=True, idempotency_key="job-1")
    assert again == retried and len(registry.versions()) == 2


def test_a_publisher_killed_between_its_steps_leaves_a_version_that_is_rolled_out(redis_server, signing_keys) -> None:
    """The worker dies after its publish transaction, before recording it: the redelivered job finds the
    version already stored and already desired (one transaction), instead of stored and never rolled out."""
    registry = ModelRegistry(connect(RegistryAccess(redis_url=redis_server.url)), "default")
    signer = ManifestSigner(signing_keys[0])
    registry.publish(model(1), "serving", EXPECTED_INPUT, {}, signer, promote=True)
    first = registry.publish(model(2), "job", EXPECTED_INPUT, {}, signer, promote=True, idempotency_key="job-7")
    redelivered = registry.publish(model(2), "job", EXPECTED_INPUT, {}, signer, promote=True, idempotency_key="job-7")
    assert redelivered.version == first.version and registry.desired().version == first.version


def test_status_shows_unreadable_and_lying_rows_and_goes_on(nodes, redis_server, capsys) -> None:
    registry, signer, fleet = nodes
    version = registry.publish(model(1), "a", EXPECTED_INPUT, {}, signer, promote=True)
    assert all(node.wait_version("1", sha256=version.sha256) for node in fleet)
    registry.client.zadd(registry.keys.nodes, {"garbage": time.time() + 3600, "liar": time.time() + 3600})
    registry.client.set(registry.keys.node_status("garbage"), b"\x00not json")
    liar = {"node_id": "liar", "version": "1", "sha256": "0" * 64, "heartbeat": time.time() + 3600}
    registry.client.set(registry.keys.node_status("liar"), json.dumps(liar))
    code, table = status_table(redis_server.url, capsys)
    assert code == 0
    rows = {line.split()[0]: line for line in table.splitlines() if line.split() and line.split()[0] in
            ("garbage", "liar", "node-0")}
    assert "unreadable" in rows["garbage"] and "mismatch" in rows["liar"] and " ok " in rows["node-0"]
    assert "converged: no" in table


def test_a_node_whose_key_file_is_gone_serves_its_cache_and_follows_again_once_it_is_back(
    redis_server, signing_keys, tmp_path
) -> None:
    registry = ModelRegistry(connect(RegistryAccess(redis_url=redis_server.url)), "default")
    signer = ManifestSigner(signing_keys[0])
    key = tmp_path / "node.pub"
    shutil.copy(signing_keys[1], key)
    first = registry.publish(model(1), "a", EXPECTED_INPUT, {}, signer, promote=True)
    slow_poll = ["--sync-poll-seconds", "120", "--heartbeat-seconds", "0.5"]  # the restored key is seen, not polled
    node = EdgeNodeProcess("keyless", free_port(), redis_server.url, key, tmp_path / "cache", extra_args=slow_poll,
                           log_path=tmp_path / "node.log")
    try:
        assert node.start().wait_version("1", sha256=first.sha256)
        node.stop()
        key.unlink()
        second = registry.publish(model(2), "b", EXPECTED_INPUT, {}, signer, promote=True)
        assert node.start().wait_version("1", sha256=first.sha256)  # up, serving its verified cache
        assert wait_for_error(registry, "keyless", "cannot read key file")
        shutil.copy(signing_keys[1], key)
        assert node.wait_version(str(second.version), sha256=second.sha256, timeout_s=15)  # no restart, no poll
    finally:
        node.stop()


def test_cli_names_a_full_redis_without_dumping_the_model(redis_server, signing_keys, tmp_path, capsys) -> None:
    client = connect(RegistryAccess(redis_url=redis_server.url))
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", int(client.info("memory")["used_memory"]) + 256 * 1024)
    graph = onnx.load_from_string(linear_onnx())  # a valid model, padded past what Redis has room for
    graph.graph.initializer.append(onnx.helper.make_tensor("pad", onnx.TensorProto.FLOAT, [400_000], [0.0] * 400_000))
    big = tmp_path / "big.onnx"
    big.write_bytes(graph.SerializeToString())
    code = registry_cli(["--redis-url", redis_server.url, "--signing-key", str(signing_keys[0]), "publish", str(big)])
    err = capsys.readouterr().err
    assert code == 2 and "Redis is full" in err and "nothing was stored" in err and len(err) < 600
    client.config_set("maxmemory", 0)
    assert ModelRegistry(client, "default").versions() == []


def test_status_of_an_empty_registry_says_what_to_do(redis_server, capsys) -> None:
    code, table = status_table(redis_server.url, capsys)
    assert code == 0 and "holds no version" in table and "publish MODEL.onnx --promote" in table
    assert "no node has reported" in table
