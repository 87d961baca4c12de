"""Shared fixtures: small synthetic face sets that the tests write, and the real FER2013 when present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgefer.localfleet.ports import free_port  # noqa: F401 - re-exported for the tests

REPO = Path(__file__).resolve().parent.parent
SHARED_FER = REPO.parent / "shared" / "data" / "fer2013"


def synthetic_faces(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Learnable toy faces: class k brightens cell k of a 3x3 grid (16x16 cells, robust to augmentation)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 7
    x = rng.normal(100, 20, size=(n, 48, 48))
    for i, label in enumerate(y):
        row, col = divmod(int(label), 3)
        x[i, row * 16 + 2 : row * 16 + 14, col * 16 + 2 : col * 16 + 14] += 110
    return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)


@pytest.fixture(scope="session")
def toy_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "toy.npz"
    x, y = synthetic_faces(420)
    np.savez(path, x=x, y=y)
    return path


@pytest.fixture(scope="session")
def real_fer() -> Path:
    if not (SHARED_FER / "test_public.npz").exists():
        pytest.skip(f"real FER2013 not found at {SHARED_FER} (the ../shared folder beside the checkout)")
    return SHARED_FER


BASELINE_ONNX = REPO / "models" / "ean-baseline.onnx"


@pytest.fixture
def redis_server(tmp_path: Path):
    """A real redis-server on a free loopback port (append-only file, so a kill keeps acknowledged data)."""
    from edgefer.localfleet.redis_server import RedisServer

    server = RedisServer(free_port(), tmp_path / "redis").start()
    yield server
    server.kill()


FAST_SYNC = ["--sync-poll-seconds", "1", "--heartbeat-seconds", "0.5"]


@pytest.fixture
def node_fleet(redis_server, signing_keys, tmp_path: Path):
    """Start edge node processes of fleet `default` following `redis_server`: yields (registry, signer, start),
    where start(count) returns `count` started nodes; all are stopped at the end."""
    from edgefer.localfleet.edge_nodes import EdgeNodeProcess
    from edgefer.registry.connection import RegistryAccess, connect
    from edgefer.registry.signing import ManifestSigner
    from edgefer.registry.store import ModelRegistry

    started = []

    def start(count: int) -> list:
        nodes = [
            EdgeNodeProcess(f"node-{i}", free_port(), redis_server.url, signing_keys[1], tmp_path / f"cache-{i}",
                            extra_args=FAST_SYNC, log_path=tmp_path / f"node-{i}.log").start()
            for i in range(count)
        ]
        started.extend(nodes)
        return nodes

    registry = ModelRegistry(connect(RegistryAccess(redis_url=redis_server.url)), "default")
    yield registry, ManifestSigner(signing_keys[0]), start
    for node in started:
        node.stop()


@pytest.fixture(scope="session")
def signing_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from edgefer.registry.signing import generate_keypair

    folder = tmp_path_factory.mktemp("keys")
    generate_keypair(folder / "worker.pem", folder / "worker.pub")
    return folder / "worker.pem", folder / "worker.pub"


def linear_onnx(height: int = 48, width: int = 48, scale: float = 0.01) -> bytes:
    """A tiny valid classifier graph (pooled pixels -> 7 logits) with an input of the given size; another
    `scale` gives other bytes (distinct models for registry tests)."""
    from onnx import TensorProto, helper

    weights = helper.make_tensor("w", TensorProto.FLOAT, [1, 7], [scale * k for k in range(7)])
    nodes = [
        helper.make_node("GlobalAveragePool", ["faces"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("faces", TensorProto.FLOAT, ["N", 1, height, width])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 7])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model.SerializeToString()
