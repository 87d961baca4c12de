"""The precision setting: which CPUs run bf16 autocast, which networks use it under `auto`, and a dense
teacher that trains and teaches under bf16 on small data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compression_worker.data.augment import AugmentConfig
from compression_worker.distill.teachers import TorchTeacher
from compression_worker.model.ean import EAN
from compression_worker.model.teacher_nets import FaceResNet, FaceVGG, TeacherConfig
from compression_worker.training.precision import cpu_bf16_features, describe_precision, resolve_precision
from compression_worker.training.trainer import OptimConfig, Trainer
from edgefer.datasets import load_faces, stratified_split
from tests.test_training import TINY

CPU = torch.device("cpu")
SMALL_RESNET = TeacherConfig(stem_channels=8, widths=(16, 32), depths=(1, 1), dropout=0.0)
# max pooling down to 3x3 keeps where the toy faces' bright cell is (a global average of a shallow ResNet does not)
SMALL_VGG = TeacherConfig(widths=(8, 16, 24, 32), depths=(1, 1, 1, 1), dropout=0.0)


def test_cpu_features_are_read_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_bf16 amx_tile\nbugs\t: none\n")
    assert cpu_bf16_features(info) == ("amx_bf16", "avx512_bf16")
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2\n")
    assert cpu_bf16_features(info) == ()
    assert cpu_bf16_features(tmp_path / "missing") == ()


def test_auto_uses_bf16_for_dense_nets_on_a_bf16_cpu_and_keeps_eans_in_fp32() -> None:
    dense, depthwise = FaceResNet(SMALL_RESNET), EAN(TINY)
    assert resolve_precision("auto", CPU, dense, features=("amx_bf16",)) == "bf16"
    assert resolve_precision("auto", CPU, depthwise, features=("amx_bf16",)) == "fp32"
    assert resolve_precision("auto", CPU, dense, features=()) == "fp32"
    assert resolve_precision("auto", torch.device("cuda"), depthwise) == "bf16"
    assert resolve_precision("bf16", CPU, depthwise, features=()) == "bf16"  # asked for: honoured
    assert resolve_precision("fp32", CPU, dense, features=("avx512_bf16",)) == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp16", CPU, dense)
    with pytest.raises(ValueError, match="precision must be one of"):
        OptimConfig(precision="half")
    assert describe_precision("fp32", CPU) == "fp32 on cpu"


def test_a_dense_net_trains_and_teaches_under_bf16(tmp_path: Path, toy_npz: Path, capsys) -> None:
    faces = load_faces(toy_npz)
    train_idx, val_idx = stratified_split(faces.y, 0.2, seed=0)
    torch.manual_seed(0)
    still = AugmentConfig(max_rotation_deg=0, scale_range=(1.0, 1.0), max_shift_px=0, hflip_prob=0, erase_prob=0)
    cfg = OptimConfig(epochs=3, batch_size=32, lr=0.05, augment=still, precision="bf16")
    trainer = Trainer(FaceVGG(SMALL_VGG), cfg, tmp_path, CPU)
    result = trainer.fit(faces.subset(train_idx), faces.subset(val_idx))
    assert "training in bf16 autocast on the CPU" in capsys.readouterr().out
    losses = [h.train_loss for h in result.history]
    assert losses[-1] < losses[0] and result.best_val_acc > 1 / 7 + 0.2
    x = torch.from_numpy(faces.x[:64]).float().unsqueeze(1)
    in_bf16 = TorchTeacher(trainer.model, CPU, precision="bf16").logits(x)
    in_fp32 = TorchTeacher(trainer.model, CPU, precision="fp32").logits(x)
    assert in_bf16.dtype == torch.float32  # soft labels leave the teacher as float32 whatever it ran in
    assert (in_bf16.argmax(1) == in_fp32.argmax(1)).float().mean() > 0.9
