"""Shared fixtures: small synthetic face sets that the tests write, and the real FER2013 when present."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

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


def free_port() -> int:
    """A loopback port that was free a moment ago (for servers that must be started on a known port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
