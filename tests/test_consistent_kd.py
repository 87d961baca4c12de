"""Consistent distillation, the teacher zoo, ensembles, mixing and EMA, on tiny data and on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.optim.swa_utils import AveragedModel

from compression_worker.cli import main as worker_main
from compression_worker.data.augment import AugmentConfig
from compression_worker.data.mixing import MixConfig, mix_batch
from compression_worker.distill.loss import consistent_kd_criterion, kd_loss
from compression_worker.distill.teachers import EnsembleTeacher, OnnxTeacher, TorchTeacher, load_teachers
from compression_worker.export import export_onnx
from compression_worker.model.ean import EAN, EANConfig
from compression_worker.model.zoo import TEACHERS, build_model
from compression_worker.training.checkpoint import load_model, load_network, save_model
from compression_worker.training.trainer import Batch, OptimConfig, Trainer, ema_with_warmup
from edgefer.datasets import load_faces, stratified_split
from tests.conftest import synthetic_faces

CPU = torch.device("cpu")
TINY = EANConfig(stem_channels=8, widths=(16, 24, 32, 48), depths=(1, 1, 1, 1), dropout=0.0)


class RecordingTeacher:
    """A real teacher network that also keeps every batch it was asked about."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.inner = TorchTeacher(model, CPU, mirror_average=False, name="recording")
        self.name = self.inner.name
        self.seen: list[torch.Tensor] = []

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.inner.logits(x)


def _splits(toy_npz: Path):
    faces = load_faces(toy_npz)
    train_idx, val_idx = stratified_split(faces.y, 0.2, seed=0)
    return faces.subset(train_idx), faces.subset(val_idx)


def test_the_teacher_sees_exactly_the_students_augmented_and_mixed_batch(tmp_path: Path, toy_npz: Path) -> None:
    torch.manual_seed(0)
    teacher = RecordingTeacher(EAN(TINY))
    student = EAN(TINY)
    student_inputs: list[torch.Tensor] = []
    student.register_forward_pre_hook(lambda _m, args: student_inputs.append(args[0].detach().clone()) if _m.training else None)
    cfg = OptimConfig(epochs=1, batch_size=32, lr=0.05, mix=MixConfig(mixup_alpha=0.4, cutmix_alpha=1.0))
    train, val = _splits(toy_npz)
    Trainer(student, cfg, tmp_path, CPU, consistent_kd_criterion(teacher, 0.8, 2.0)).fit(train, val)
    assert len(teacher.seen) == len(student_inputs) == len(train) // 32
    for seen, fed in zip(teacher.seen, student_inputs):
        assert torch.equal(seen, fed)
    raw = torch.from_numpy(train.x[:32]).float().unsqueeze(1)
    assert not any(torch.equal(seen, raw) for seen in teacher.seen)  # augmented views, not the stored faces


def test_consistent_loss_matches_kd_on_the_teachers_live_probabilities() -> None:
    torch.manual_seed(0)
    teacher = TorchTeacher(EAN(TINY), CPU, mirror_average=True)
    x, y = synthetic_faces(6)
    batch = Batch(torch.from_numpy(x).float().unsqueeze(1), torch.from_numpy(y), torch.arange(6))
    logits = torch.randn(6, 7)
    soft = torch.softmax(teacher.logits(batch.x) / 3.0, dim=1)
    expected = kd_loss(logits, soft, batch.y, 0.6, 3.0)
    assert torch.isclose(consistent_kd_criterion(teacher, 0.6, 3.0)(logits, batch), expected)


def test_mixing_blends_inputs_and_targets_alike() -> None:
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 1, 48, 48).contiguous()
    gen = torch.Generator().manual_seed(3)
    mixed, mix = mix_batch(x, MixConfig(mixup_alpha=1.0), gen)
    assert mix is not None and 0.0 <= mix.lam <= 1.0
    expected = mix.lam * x + (1 - mix.lam) * x[mix.perm]
    assert torch.allclose(mixed, expected)
    onehot = torch.eye(4)
    assert torch.allclose(mix.blend(onehot).sum(1), torch.ones(4))
    cut, cmix = mix_batch(x, MixConfig(cutmix_alpha=1.0), torch.Generator().manual_seed(5))
    kept = (cut == x).float().mean(dim=(1, 2, 3))
    moved = cmix.perm != torch.arange(4)
    assert torch.allclose(kept[moved], torch.full_like(kept[moved], cmix.lam), atol=1e-6)  # lam = the area kept
    same, none = mix_batch(x, MixConfig(), gen)
    assert none is None and same is x


def test_ema_and_raw_weights_are_both_validated_and_the_better_kept(tmp_path: Path, toy_npz: Path) -> None:
    torch.manual_seed(0)
    still = AugmentConfig(max_rotation_deg=0, scale_range=(1.0, 1.0), max_shift_px=0, hflip_prob=0, erase_prob=0)
    cfg = OptimConfig(epochs=2, batch_size=32, lr=0.1, augment=still, ema_decay=0.9)
    trainer = Trainer(EAN(TINY), cfg, tmp_path, CPU)
    train, val = _splits(toy_npz)
    result = trainer.fit(train, val)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    ema_state = trainer.kept_model.state_dict()
    raw_state = trainer.model.state_dict()
    kept = ema_state if best["ema"] else raw_state  # the better of the two on val, as recorded
    assert best["val_acc"] == max(result.history[best["epoch"] - 1].val_acc, result.history[best["epoch"] - 1].raw_val_acc)
    if result.best_epoch == 2:
        assert all(torch.equal(best["state_dict"][k], kept[k].cpu()) for k in best["state_dict"])
    assert any(not torch.equal(ema_state[k], raw_state[k]) for k in raw_state if raw_state[k].is_floating_point())
    # The update rule: a copy at the first step, then ema = d * ema + (1 - d) * weights with the warm-up
    # d = min(decay, (1 + n) / (10 + n)) after n updates.
    w = torch.nn.Linear(2, 1, bias=False)
    ema = AveragedModel(w, multi_avg_fn=ema_with_warmup(0.99), use_buffers=True)
    expected = 0.0
    with torch.no_grad():
        for n, value in enumerate([1.0, 3.0, 5.0, 2.0]):
            w.weight.fill_(value)
            ema.update_parameters(w)
            d = min(0.99, (1.0 + n) / (10.0 + n)) if n else 0.0
            expected = d * expected + (1 - d) * value
    assert torch.allclose(ema.module.weight, torch.full((1, 2), expected))


@pytest.mark.parametrize("arch", sorted(TEACHERS))
def test_zoo_teachers_forward_at_48x48_and_survive_a_checkpoint(arch: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(arch).eval()
    x = torch.rand(2, 1, 48, 48) * 255
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    save_model(model, tmp_path / "t.pt")
    again = load_network(tmp_path / "t.pt")
    with torch.no_grad():
        assert torch.allclose(again(x), out, atol=1e-5)
    with pytest.raises(ValueError, match="teacher checkpoint, not an EAN"):
        load_model(tmp_path / "t.pt")


def test_a_zoo_teacher_exports_and_its_onnx_teaches_like_the_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("resnet10-fer").eval()
    export_onnx(model, tmp_path / "t.onnx", mirror_average=True)
    x = torch.from_numpy(synthetic_faces(5)[0]).float().unsqueeze(1)
    from_onnx = OnnxTeacher(tmp_path / "t.onnx", threads=1).logits(x)
    from_torch = TorchTeacher(model, CPU, mirror_average=True).logits(x)
    assert torch.allclose(from_onnx, from_torch, atol=1e-3)


def test_an_ensemble_averages_its_members_logits(tmp_path: Path) -> None:
    torch.manual_seed(0)
    a, b = EAN(TINY), EAN(TINY)
    save_model(a, tmp_path / "a.pt")
    save_model(b, tmp_path / "b.pt")
    ensemble = load_teachers([tmp_path / "a.pt", tmp_path / "b.pt"], CPU, threads=1)
    assert isinstance(ensemble, EnsembleTeacher)
    x = torch.from_numpy(synthetic_faces(4)[0]).float().unsqueeze(1)
    ta, tb = TorchTeacher(a, CPU), TorchTeacher(b, CPU)
    assert torch.allclose(ensemble.logits(x), (ta.logits(x) + tb.logits(x)) / 2, atol=1e-6)


def test_consistent_its_from_an_onnx_teacher_resumes_mid_round(tmp_path: Path, toy_npz: Path, capsys) -> None:
    torch.manual_seed(0)
    export_onnx(EAN(TINY), tmp_path / "teacher.onnx")
    work = tmp_path / "its"
    argv = ["distill", "--mode", "consistent", "--teacher", str(tmp_path / "teacher.onnx"), "--data", str(toy_npz),
            "--arch", "ean-xs", "--epochs", "2", "--rounds", "2", "--refine", "average", "--ema-decay", "0.9",
            "--mixup", "0.2", "--workdir", str(work), "--threads", "2"]
    assert worker_main(argv) == 0
    summary = json.loads((work / "its.json").read_text())
    rounds = summary["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert rounds[0]["teacher"] == str(tmp_path / "teacher.onnx") and not (work / "round0" / "model.pt").exists()
    assert rounds[1]["weights_transferred"] is False and rounds[2]["weights_transferred"] is True
    assert rounds[2]["teacher"] == f"{tmp_path / 'teacher.onnx'} + round1"  # refine=average: an ensemble
    # Cut short after round 2's first epoch: the rerun resumes there instead of starting the round again.
    last = torch.load(work / "round2" / "last.pt", weights_only=False)
    last["epochs_done"], last["history"] = 1, last["history"][:1]
    torch.save(last, work / "round2" / "last.pt")
    for name in ("metrics.json", "model.pt"):
        (work / "round2" / name).unlink()
    capsys.readouterr()
    assert worker_main(argv) == 0
    out = capsys.readouterr().out
    assert "round 1: already done" in out and "resuming from" in out and "after epoch 1" in out
    assert len((work / "round2" / "history.jsonl").read_text().splitlines()) == 2


def test_prune_keeps_distilling_consistently_from_an_external_teacher(tmp_path: Path, toy_npz: Path) -> None:
    torch.manual_seed(0)
    save_model(EAN(TINY), tmp_path / "distilled.pt")
    export_onnx(EAN(TINY), tmp_path / "teacher.onnx")
    assert worker_main(["prune", "--model", str(tmp_path / "distilled.pt"), "--data", str(toy_npz), "--target", "0.4",
                        "--local-epochs", "1", "--finetune-epochs", "1", "--channel-multiple", "4", "--distill-mode",
                        "consistent", "--teacher", str(tmp_path / "teacher.onnx"), "--workdir", str(tmp_path / "p"),
                        "--threads", "2"]) == 0
    summary = json.loads((tmp_path / "p" / "prune.json").read_text())
    assert summary["teacher"] == str(tmp_path / "teacher.onnx") and summary["prune"]["distill_mode"] == "consistent"
    assert not (tmp_path / "p" / "soft_labels.npz").exists()  # nothing cached: the teacher ran on every batch
    assert np.isfinite(summary["steps"][-1]["val_acc"])


def test_unknown_distill_mode_and_missing_teacher_are_named(tmp_path: Path, toy_npz: Path, capsys) -> None:
    assert worker_main(["distill", "--data", str(toy_npz), "--teacher", str(tmp_path / "absent.onnx"),
                        "--workdir", str(tmp_path / "w")]) == 2
    assert "absent.onnx: no such model file" in capsys.readouterr().err
