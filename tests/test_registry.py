"""The registry protocol against a real redis-server: signatures, versions, desired record, canary, CLI."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edgefer.cli.registry import main as registry_cli
from edgefer.registry.connection import RegistryAccess, connect
from edgefer.registry.desired import Canary, DesiredRecord, node_bucket
from edgefer.registry.manifest import EXPECTED_INPUT, ManifestError, new_manifest
from edgefer.registry.signing import ManifestSigner, ManifestVerifier, generate_keypair
from edgefer.registry.store import ModelRegistry, RegistryError
from tests.conftest import BASELINE_ONNX, linear_onnx


@pytest.fixture
def registry(redis_server) -> ModelRegistry:
    return ModelRegistry(connect(RegistryAccess(redis_url=redis_server.url)), fleet="test")


def test_signature_covers_every_field(signing_keys, tmp_path: Path) -> None:
    private, public = signing_keys
    blob = BASELINE_ONNX.read_bytes()
    signed = ManifestSigner(private).sign(new_manifest(blob, 1, "m", EXPECTED_INPUT, {"acc": 0.6}, None))
    verifier = ManifestVerifier(public)
    verifier.verify(signed)
    signed.check_blob(blob)
    for tampered in (dataclasses.replace(signed, size=1), dataclasses.replace(signed, metrics={"acc": 0.9})):
        with pytest.raises(ManifestError, match="bad signature"):
            verifier.verify(tampered)
    with pytest.raises(ManifestError, match="unsigned"):
        verifier.verify(dataclasses.replace(signed, signature=""))
    generate_keypair(tmp_path / "other.pem", tmp_path / "other.pub")
    with pytest.raises(ManifestError, match="bad signature"):
        verifier.verify(ManifestSigner(tmp_path / "other.pem").sign(signed))
    with pytest.raises(ManifestError, match="sha256"):
        signed.check_blob(blob[:-1] + b"x")


def test_versions_are_monotonic_linked_and_never_overwritten(registry, signing_keys) -> None:
    signer = ManifestSigner(signing_keys[0])
    blob = BASELINE_ONNX.read_bytes()
    first = registry.publish(blob, "a", EXPECTED_INPUT, {}, signer)
    second = registry.publish(blob, "b", EXPECTED_INPUT, {}, signer)
    assert (first.version, second.version, second.parent) == (1, 2, 1)
    assert [m.version for m in registry.versions()] == [1, 2]
    assert registry.fetch(2) == (second, blob)
    with pytest.raises(RegistryError, match="already exists"):
        registry.put(first, b"other bytes")
    assert registry.blob(1) == blob


def test_promote_canary_rollback(registry, signing_keys) -> None:
    signer = ManifestSigner(signing_keys[0])
    for name in "abc":
        registry.publish(BASELINE_ONNX.read_bytes(), name, EXPECTED_INPUT, {}, signer)
    with pytest.raises(RegistryError, match="promote a version first"):
        registry.set_canary(3, ["n1"], 0)
    registry.promote(1)
    record = registry.promote(2)
    assert (record.version, record.previous, record.revision) == (2, 1, 2)
    record = registry.set_canary(3, ["n1"], 0)
    assert (record.target_for("n1"), record.target_for("n2")) == (3, 2)
    assert registry.rollback().version == 1
    with pytest.raises(RegistryError, match="version 9 is not in the registry"):
        registry.promote(9)


def test_canary_share_is_stable_by_node_id() -> None:
    record = DesiredRecord(1, Canary(2, [], 25.0))
    nodes = [f"node-{i}" for i in range(2000)]
    chosen = {n for n in nodes if record.target_for(n) == 2}
    assert 400 < len(chosen) < 600
    assert chosen == {n for n in nodes if node_bucket(n) < 25.0}  # the same nodes every time, on every reader
    assert DesiredRecord.from_json(record.to_json()) == record


def test_cli_publish_list_and_status(redis_server, signing_keys, capsys) -> None:
    base = ["--redis-url", redis_server.url, "--fleet", "cli"]
    assert registry_cli([*base, "--signing-key", str(signing_keys[0]), "publish", str(BASELINE_ONNX), "--promote"]) == 0
    assert "as version 1" in capsys.readouterr().out
    assert registry_cli([*base, "versions"]) == 0
    listing = capsys.readouterr().out
    assert "ean-baseline" in listing and "desired" in listing and "%" in listing  # test accuracy from the card
    assert registry_cli([*base, "status"]) == 0
    assert "0 nodes" in capsys.readouterr().out
    assert registry_cli([*base, "status", "--wait", "--timeout", "0.2", "--interval", "0.1"]) == 1


@pytest.mark.parametrize(
    "write, extra, message",
    [
        (lambda p: p.write_bytes(b"not onnx"), [], "onnxruntime cannot load it"),
        (lambda p: p.write_bytes(linear_onnx(64, 64)), [], "is not the"),
        (None, [], "cannot read model file"),
    ],
)
def test_cli_refuses_what_no_node_would_serve(redis_server, signing_keys, tmp_path, capsys, write, extra, message) -> None:
    model = tmp_path / "candidate.onnx"
    if write:
        write(model)
    code = registry_cli(["--redis-url", redis_server.url, "--signing-key", str(signing_keys[0]), "publish", str(model), *extra])
    err = capsys.readouterr().err
    assert code == 2 and str(model) in err and message in err


def test_cli_names_missing_key_unknown_version_and_unreachable_redis(redis_server, tmp_path, capsys) -> None:
    base = ["--redis-url", redis_server.url]
    assert registry_cli([*base, "publish", str(BASELINE_ONNX)]) == 2
    assert "needs --signing-key" in capsys.readouterr().err
    assert registry_cli([*base, "--signing-key", str(tmp_path / "none.pem"), "publish", str(BASELINE_ONNX)]) == 2
    assert "none.pem: cannot read key file" in capsys.readouterr().err
    assert registry_cli([*base, "promote", "7"]) == 2
    assert "version 7 is not in the registry" in capsys.readouterr().err
    assert registry_cli(["--redis-url", "redis://127.0.0.1:1/0", "versions"]) == 2
    assert "registry unreachable" in capsys.readouterr().err


def test_cli_names_and_replaces_an_unreadable_desired_record(redis_server, signing_keys, capsys) -> None:
    base = ["--redis-url", redis_server.url, "--fleet", "broken"]
    assert registry_cli([*base, "--signing-key", str(signing_keys[0]), "publish", str(BASELINE_ONNX), "--promote"]) == 0
    registry = ModelRegistry(connect(RegistryAccess(redis_url=redis_server.url)), "broken")
    registry.client.set(registry.keys.desired, "{not json")
    capsys.readouterr()
    assert registry_cli([*base, "desired"]) == 2
    assert "unreadable desired record" in capsys.readouterr().err  # a message, not a traceback
    assert registry_cli([*base, "promote", "1"]) == 2
    assert "`promote VERSION --force` replaces it" in capsys.readouterr().err
    assert registry_cli([*base, "promote", "1", "--force"]) == 0
    assert registry.desired().version == 1
