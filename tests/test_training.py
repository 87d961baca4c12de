"""A short run on tiny data learns, checkpoints, and resumes where it stopped."""

import json
from pathlib import Path

import pytest
import torch

from compression_worker.data.augment import AugmentConfig, augment_faces
from compression_worker.model.ean import EAN, EANConfig
from compression_worker.training.schedule import warmup_cosine
from compression_worker.training.trainer import OptimConfig, Trainer
from edgefer.datasets import load_faces, stratified_split

TINY = EANConfig(stem_channels=8, widths=(16, 24, 32, 48), depths=(1, 1, 1, 1), dropout=0.0)  # 4 stages: global pooling must still see where


def fit(workdir: Path, toy_npz: Path, epochs: int):
    faces = load_faces(toy_npz)
    train_idx, val_idx = stratified_split(faces.y, 0.2, seed=0)
    torch.manual_seed(0)
    # No geometric augmentation: the toy classes are positions, which flips and shifts would blur.
    still = AugmentConfig(max_rotation_deg=0, scale_range=(1.0, 1.0), max_shift_px=0, hflip_prob=0, erase_prob=0)
    cfg = OptimConfig(epochs=epochs, batch_size=32, lr=0.1, augment=still)
    return Trainer(EAN(TINY), cfg, workdir, torch.device("cpu")).fit(faces.subset(train_idx), faces.subset(val_idx))


def test_training_lowers_the_loss_and_writes_checkpoints(tmp_path: Path, toy_npz: Path) -> None:
    result = fit(tmp_path, toy_npz, epochs=6)
    losses = [h.train_loss for h in result.history]
    assert losses[-1] < losses[0] * 0.8
    assert result.best_val_acc > 1 / 7 + 0.2
    assert (tmp_path / "best.pt").exists() and (tmp_path / "last.pt").exists()
    lines = (tmp_path / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4, 5, 6]


def test_interrupted_run_resumes_at_the_next_epoch(tmp_path: Path, toy_npz: Path, capsys) -> None:
    fit(tmp_path, toy_npz, epochs=2)
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    state["epochs_done"] = 1  # as if killed after epoch 1
    state["history"] = state["history"][:1]
    state["optim_config"]["epochs"] = 2
    torch.save(state, tmp_path / "last.pt")
    result = fit(tmp_path, toy_npz, epochs=2)
    assert "resuming" in capsys.readouterr().out
    assert [h.epoch for h in result.history] == [1, 2]


def test_resume_refuses_other_settings(tmp_path: Path, toy_npz: Path) -> None:
    fit(tmp_path, toy_npz, epochs=1)
    with pytest.raises(ValueError, match="other training settings"):
        fit(tmp_path, toy_npz, epochs=3)


def test_schedule_warms_up_then_decays_to_the_floor() -> None:
    lrs = [warmup_cosine(s, 100, 10, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.01) and lrs[9] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] < 1e-4


def test_augmentation_keeps_shape_and_pixel_range() -> None:
    x = torch.rand(16, 1, 48, 48) * 255
    out = augment_faces(x, AugmentConfig(), torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 255
    assert not torch.allclose(out, x)
    same = augment_faces(x, AugmentConfig(), torch.Generator().manual_seed(0))
    assert torch.equal(out, same)
