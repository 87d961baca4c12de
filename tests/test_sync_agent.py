"""A node's sync agent against a real redis-server and a real gRPC node in this process.

Each refused version (corrupt bytes, bad signature, wrong input) leaves the old model serving and is
reported in the node's status record and metrics; rollback is instant; a canary reaches only its nodes.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import time
from pathlib import Path

import pytest

from edgefer.cli.registry import main as registry_cli
from edgefer.registry.connection import RegistryAccess, connect
from edgefer.registry.manifest import EXPECTED_INPUT, new_manifest
from edgefer.registry.signing import ManifestSigner, ManifestVerifier, TrustedKey, generate_keypair
from edgefer.registry.status import NodeStatus
from edgefer.registry.store import ModelRegistry
from services.edge.model_cache import ModelCache
from services.edge.server import start_server
from services.edge.settings import EdgeSettings
from services.edge.sync_agent import SyncAgent, SyncConfig
from tests.conftest import BASELINE_ONNX, linear_onnx

FLEET = "agents"


def wait_for(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def fleet(redis_server, signing_keys, tmp_path: Path):
    """Start in-process nodes by id; yields (registry, signer, start_node)."""
    registry = ModelRegistry(connect(RegistryAccess(redis_url=redis_server.url)), FLEET)
    started = []

    def start_node(node_id: str):
        node = start_server(EdgeSettings(host="127.0.0.1", port=0, metrics_port=0, intra_op_threads=1))
        config = SyncConfig(node_id, poll_interval_s=1.0, heartbeat_s=0.5)
        own_registry = ModelRegistry(connect(RegistryAccess(redis_url=redis_server.url)), FLEET)
        agent = SyncAgent(own_registry, TrustedKey(signing_keys[1]), node, ModelCache(tmp_path / node_id), config)
        agent.start()
        started.append((node, agent))
        return node, agent

    yield registry, ManifestSigner(signing_keys[0]), start_node
    for node, agent in started:
        agent.stop()
        node.stop(0)


def serving(node) -> str | None:
    model = node.holder.current()
    return model.version if model else None


def status_of(registry: ModelRegistry, node_id: str):
    return registry.node_statuses()[1].get(node_id)


def publish_good(registry, signer, promote: bool = True) -> int:
    return registry.publish(BASELINE_ONNX.read_bytes(), "good", EXPECTED_INPUT, {}, signer, promote=promote).version


def signed_here(signer, registry, blob: bytes, name: str, input_spec: dict = EXPECTED_INPUT):
    """Version 50 of this fleet and registry epoch, signed by `signer`."""
    return signer.sign(new_manifest(blob, 50, name, input_spec, {}, None, FLEET, registry.epoch()))


def corrupt_blob(registry, signer, tmp_path):
    """Other bytes than the node serves (bytes it holds already are served without a download)."""
    blob = linear_onnx()
    manifest = signed_here(signer, registry, blob, "corrupt")
    return manifest, blob[:100] + bytes([blob[100] ^ 0xFF]) + blob[101:], "integrity", "sha256"


def foreign_signature(registry, signer, tmp_path):
    generate_keypair(tmp_path / "rogue.pem", tmp_path / "rogue.pub")
    blob = BASELINE_ONNX.read_bytes()
    manifest = signed_here(ManifestSigner(tmp_path / "rogue.pem"), registry, blob, "rogue")
    return manifest, blob, "signature", "bad signature"


def unsigned(registry, signer, tmp_path):
    blob = BASELINE_ONNX.read_bytes()
    return new_manifest(blob, 50, "unsigned", EXPECTED_INPUT, {}, None, FLEET, registry.epoch()), blob, "signature", "unsigned"


def wrong_input(registry, signer, tmp_path):
    blob = linear_onnx(64, 64)
    spec = {"name": "faces", "dtype": "float32", "shape": ["N", 1, 64, 64]}
    return signed_here(signer, registry, blob, "wide", spec), blob, "input", "is not the expected"


def lying_manifest(registry, signer, tmp_path):
    """Signed, claims the right input, but the graph takes 64x64: the load-time check catches it."""
    blob = linear_onnx(64, 64)
    return signed_here(signer, registry, blob, "liar"), blob, "load", "input must be"


@pytest.mark.parametrize("make_bad", [corrupt_blob, foreign_signature, unsigned, wrong_input, lying_manifest])
def test_a_bad_version_is_refused_and_the_old_model_keeps_serving(fleet, tmp_path, make_bad) -> None:
    registry, signer, start_node = fleet
    good = publish_good(registry, signer)
    node, _ = start_node("n1")
    assert wait_for(lambda: serving(node) == str(good))
    manifest, blob, reason, message = make_bad(registry, signer, tmp_path)
    registry.put(manifest, blob)
    registry.promote(manifest.version)
    assert wait_for(lambda: message in getattr(status_of(registry, "n1"), "last_error", ""))
    status = status_of(registry, "n1")
    assert serving(node) == str(good) and status.version == str(good) and status.error_version == manifest.version
    assert node.metrics.registry.get_sample_value("edgefer_model_sync_failures_total", {"reason": reason}) == 1
    time.sleep(1.2)  # a poll later: not fetched and refused again
    assert node.metrics.registry.get_sample_value("edgefer_model_sync_failures_total", {"reason": reason}) == 1
    fixed = publish_good(registry, signer)  # the next good version clears the error
    assert wait_for(lambda: serving(node) == str(fixed) and status_of(registry, "n1").last_error == "")


def test_rollback_is_instant_from_the_model_kept_loaded(fleet) -> None:
    registry, signer, start_node = fleet
    first = publish_good(registry, signer)
    node, _ = start_node("n1")
    assert wait_for(lambda: serving(node) == str(first))
    second = publish_good(registry, signer)
    assert wait_for(lambda: serving(node) == str(second))
    registry.client.delete(registry.keys.blob(first))  # rollback must not need to fetch anything
    registry.rollback()
    assert wait_for(lambda: serving(node) == str(first))
    assert node.holder.previous().version == str(second)


def test_canary_reaches_only_its_nodes_until_promoted(fleet) -> None:
    registry, signer, start_node = fleet
    stable = publish_good(registry, signer)
    nodes = {node_id: start_node(node_id)[0] for node_id in ("a", "b", "c")}
    assert wait_for(lambda: all(serving(n) == str(stable) for n in nodes.values()))
    candidate = publish_good(registry, signer, promote=False)
    registry.set_canary(candidate, ["b"], 0)
    assert wait_for(lambda: serving(nodes["b"]) == str(candidate))
    time.sleep(1.2)  # past a poll: the others stay on the stable version
    assert serving(nodes["a"]) == serving(nodes["c"]) == str(stable)
    registry.promote(candidate)
    assert wait_for(lambda: all(serving(n) == str(candidate) for n in nodes.values()))


def test_verified_models_are_cached_and_a_tampered_cache_is_not_served(fleet, signing_keys, tmp_path) -> None:
    registry, signer, start_node = fleet
    version = publish_good(registry, signer)
    node, _ = start_node("n1")
    assert wait_for(lambda: serving(node) == str(version))
    cache = ModelCache(tmp_path / "n1")
    verifier = ManifestVerifier(signing_keys[1])
    manifest, blob = cache.load_current(verifier)
    assert manifest.version == version and blob == BASELINE_ONNX.read_bytes()
    (tmp_path / "n1" / f"{manifest.sha256}.onnx").write_bytes(blob[:-10])  # files are named by content
    assert cache.load_current(verifier) is None


def test_a_garbage_desired_record_does_not_stop_a_node_following_the_registry(fleet) -> None:
    registry, signer, start_node = fleet
    first = registry.publish(BASELINE_ONNX.read_bytes(), "baseline", EXPECTED_INPUT, {}, signer, promote=True)
    node, agent = start_node("node-g")
    assert wait_for(lambda: serving(node) == str(first.version))
    registry.client.set(registry.keys.desired, "{not json")
    agent.poke()
    failures = lambda: node.metrics.registry.get_sample_value("edgefer_model_sync_failures_total", {"reason": "record"})
    assert wait_for(lambda: failures() >= 1)
    # named in the node's status record, counted once, no retry loop (it used to spin 5-13 times a second)
    assert wait_for(lambda: "desired record unreadable" in (status_of(registry, "node-g").last_error or ""))
    for _ in range(3):
        agent.poke()
        time.sleep(0.3)
    assert failures() == 1
    assert node.metrics.registry.get_sample_value("edgefer_model_sync_failures_total", {"reason": "error"}) == 0
    assert agent._thread.is_alive() and serving(node) == str(first.version)  # still serving, still syncing
    second = registry.publish(linear_onnx(), "linear", EXPECTED_INPUT, {}, signer)
    # A record written by a later release, with a field this one does not know: followed, not fatal.
    registry.client.set(registry.keys.desired, f'{{"version": {second.version}, "revision": 9, "rollout": {{"step": 2}}}}')
    agent.poke()
    assert wait_for(lambda: serving(node) == str(second.version), 20)


def test_a_manifest_copied_under_another_version_is_refused(fleet) -> None:
    registry, signer, start_node = fleet
    first = registry.publish(BASELINE_ONNX.read_bytes(), "baseline", EXPECTED_INPUT, {}, signer, promote=True)
    node, agent = start_node("node-c")
    assert wait_for(lambda: serving(node) == str(first.version))
    replay = first.version + 6  # COPY model:1:* model:7:*, then promote 7: v1's bytes must not be served as "7"
    registry.client.copy(registry.keys.manifest(first.version), registry.keys.manifest(replay))
    registry.client.copy(registry.keys.blob(first.version), registry.keys.blob(replay))
    registry.promote(replay)
    assert wait_for(lambda: node.metrics.registry.get_sample_value(
        "edgefer_model_sync_failures_total", {"reason": "identity"}) == 1)
    assert serving(node) == str(first.version)
    assert wait_for(lambda: "signed for version 1" in (registry.node_statuses()[1]["node-c"].last_error or ""))


def test_a_blob_of_another_size_is_refused_before_it_is_downloaded(fleet) -> None:
    registry, signer, start_node = fleet
    first = registry.publish(BASELINE_ONNX.read_bytes(), "baseline", EXPECTED_INPUT, {}, signer, promote=True)
    second = registry.publish(linear_onnx(), "linear", EXPECTED_INPUT, {}, signer)
    node, _ = start_node("node-s")
    assert wait_for(lambda: serving(node) == str(first.version))
    registry.client.set(registry.keys.blob(second.version), bytes(32 * 1024 * 1024))  # swapped for 32 MiB of zeros
    sent_before = int(registry.client.info("stats")["total_net_output_bytes"])
    registry.promote(second.version)
    assert wait_for(lambda: node.metrics.registry.get_sample_value(
        "edgefer_model_sync_failures_total", {"reason": "integrity"}) == 1)
    sent = int(registry.client.info("stats")["total_net_output_bytes"]) - sent_before
    assert sent < 1024 * 1024, f"redis sent {sent:,} bytes: the blob was downloaded"
    assert serving(node) == str(first.version)


def test_a_refused_version_is_tried_again_when_the_record_is_written_again_and_missing_is_never_remembered(fleet) -> None:
    registry, signer, start_node = fleet
    first = registry.publish(BASELINE_ONNX.read_bytes(), "baseline", EXPECTED_INPUT, {}, signer, promote=True)
    node, agent = start_node("node-r")
    assert wait_for(lambda: serving(node) == str(first.version))
    good = linear_onnx()
    second = registry.publish(good, "linear", EXPECTED_INPUT, {}, signer)
    registry.client.set(registry.keys.blob(second.version), b"x" * len(good))  # damaged in storage
    registry.promote(second.version)
    assert wait_for(lambda: node.metrics.registry.get_sample_value(
        "edgefer_model_sync_failures_total", {"reason": "integrity"}) == 1)
    registry.client.set(registry.keys.blob(second.version), good)  # the operator repairs it ...
    agent.poke()
    time.sleep(1.0)
    assert serving(node) == str(first.version)  # ... nothing changes under the same record ...
    registry.promote(second.version)  # ... until the record is written again
    assert wait_for(lambda: serving(node) == str(second.version))
    # The desired record names a version that is not written yet: looked for again, and served once it is.
    registry.client.set(registry.keys.desired, json.dumps({"version": second.version + 1, "revision": 99}))
    agent.poke()
    assert wait_for(lambda: node.metrics.registry.get_sample_value(
        "edgefer_model_sync_failures_total", {"reason": "missing"}) >= 1)
    third = registry.publish(BASELINE_ONNX.read_bytes(), "again", EXPECTED_INPUT, {}, signer)
    assert third.version == second.version + 1
    agent.poke()
    assert wait_for(lambda: serving(node) == str(third.version), 20)


def test_a_node_whose_disk_refuses_serves_new_versions_from_memory_and_says_so(fleet, tmp_path: Path) -> None:
    registry, signer, start_node = fleet
    first = publish_good(registry, signer)
    node, agent = start_node("node-d")
    assert wait_for(lambda: serving(node) == str(first))
    assert node.holder.current().epoch == registry.current_epoch() != ""  # number and epoch name the bytes
    cache_dir = tmp_path / "node-d"
    shutil.rmtree(cache_dir)
    cache_dir.write_bytes(b"")  # every cache write now fails (as on a full or read-only SD card)
    second = registry.publish(linear_onnx(), "linear", EXPECTED_INPUT, {}, signer, promote=True).version
    assert wait_for(lambda: serving(node) == str(second))  # verified, served from memory
    disk = lambda: node.metrics.registry.get_sample_value("edgefer_model_sync_failures_total", {"reason": "disk"})
    assert wait_for(lambda: "model cache not written" in (status_of(registry, "node-d").local_error or ""))
    status = status_of(registry, "node-d")
    assert status.version == str(second) and status.last_error == ""  # no version is blamed for the node's disk
    assert node.metrics.registry.get_sample_value("edgefer_registry_connected") == 1  # not the network either
    registry.rollback()  # back to the model kept loaded: a cache write too
    assert wait_for(lambda: serving(node) == str(first))
    for _ in range(3):  # no retry loop: the fault is reported once while it lasts
        agent.poke()
        time.sleep(0.3)
    assert disk() == 1 and serving(node) == str(first)
    cache_dir.unlink()
    cache_dir.mkdir()  # the disk is repaired: the next swap writes the cache and clears the fault
    registry.promote(second)
    assert wait_for(lambda: serving(node) == str(second))
    assert wait_for(lambda: status_of(registry, "node-d").local_error == "")


def test_liveness_is_judged_by_the_registrys_clock_not_the_boards(fleet) -> None:
    registry, signer, _ = fleet
    version = publish_good(registry, signer)
    behind = time.time() - 60  # a board that booted with an old clock and has no NTP yet
    registry.write_status(NodeStatus("pi-behind", str(version), heartbeat=behind), ttl_s=10)
    registry.write_status(NodeStatus("pi-refusing", None, last_error="refused", error_version=version,
                                     heartbeat=behind), ttl_s=10)
    rows = {r.node_id: r for r in registry.fleet_view(registry.desired(), stale_after_s=15)}
    assert not rows["pi-behind"].stale and rows["pi-behind"].clock_skew_s == pytest.approx(-60, abs=2)
    assert rows["pi-refusing"].state == "syncing"  # live, and serving nothing: the fleet has not converged
    url = f"redis://127.0.0.1:{registry.client.connection_pool.connection_kwargs['port']}/0"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = registry_cli(["--redis-url", url, "--fleet", FLEET, "status", "--wait", "--timeout", "0"])
    assert "-60s" in out.getvalue() and "converged: no" in out.getvalue(), out.getvalue()
    assert code == 1
