"""ITS: the KD loss by hand, soft labels and their cache, weight transfer, and a resumable two-round run."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from compression_worker.cli import main as worker_main
from compression_worker.distill.its import ITSConfig, initial_student
from compression_worker.distill.loss import kd_loss
from compression_worker.distill.soft_labels import SoftLabelSpec, load_cached, refine, save_cached, teacher_soft_labels
from compression_worker.distill.teachers import TorchTeacher
from compression_worker.model.ean import EAN
from edgefer.jobs.architectures import PRESETS
from tests.conftest import synthetic_faces


def test_kd_loss_equals_a_hand_computed_value() -> None:
    student = torch.tensor([[2.0, 0.0, -1.0]])
    soft = torch.tensor([[0.5, 0.3, 0.2]])
    target = torch.tensor([0])
    alpha, t = 0.6, 2.0
    z = [2.0, 0.0, -1.0]
    ce = -math.log(math.exp(2.0) / sum(math.exp(v) for v in z))
    q = [math.exp(v / t) / sum(math.exp(w / t) for w in z) for v in z]
    kl = sum(p * math.log(p / qi) for p, qi in zip([0.5, 0.3, 0.2], q))
    expected = (1 - alpha) * ce + alpha * t * t * kl
    assert kd_loss(student, soft, target, alpha, t).item() == pytest.approx(expected, rel=1e-6)


def test_kd_loss_reduces_to_cross_entropy_at_alpha_zero() -> None:
    logits, target = torch.randn(4, 7), torch.tensor([0, 1, 2, 3])
    soft = torch.softmax(torch.randn(4, 7), 1)
    assert torch.isclose(kd_loss(logits, soft, target, 0.0, 4.0), torch.nn.functional.cross_entropy(logits, target))


def test_soft_labels_sum_to_one_and_cache_is_invalidated(tmp_path: Path) -> None:
    teacher = TorchTeacher(EAN(PRESETS["ean-s"]), torch.device("cpu"), mirror_average=True)
    x, _ = synthetic_faces(20)
    spec = SoftLabelSpec(temperature=4.0, mirror_average=True)
    probs = teacher_soft_labels(teacher, x, spec, torch.device("cpu"))
    assert probs.shape == (20, 7) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    cache = tmp_path / "soft.npz"
    save_cached(cache, probs, x, spec)
    assert np.array_equal(load_cached(cache, x, spec), probs)
    other_faces = x.copy()
    other_faces[0, 0, 0] ^= 1
    assert load_cached(cache, other_faces, spec) is None
    assert load_cached(cache, x, SoftLabelSpec(temperature=2.0, mirror_average=True)) is None
    assert load_cached(tmp_path / "absent.npz", x, spec) is None


def test_refinement_modes() -> None:
    a, b = np.array([[1.0, 0.0]], np.float32), np.array([[0.0, 1.0]], np.float32)
    assert np.array_equal(refine(a, b, "latest", 2), b)
    assert np.allclose(refine(a, b, "average", 2), [[0.5, 0.5]])
    assert np.allclose(refine(np.array([[0.5, 0.5]]), b, "average", 3), [[1 / 3, 2 / 3]])
    with pytest.raises(ValueError):
        refine(a, b, "median", 2)


def test_weight_transfer_copies_the_teacher_exactly() -> None:
    torch.manual_seed(1)
    teacher = EAN(PRESETS["ean-s"])
    student, transferred = initial_student(teacher, ITSConfig(weight_transfer=True), seed=5)
    assert transferred
    for (name, t), s in zip(teacher.state_dict().items(), student.state_dict().values()):
        assert torch.equal(t, s), name
    assert student is not teacher and next(student.parameters()) is not next(teacher.parameters())
    fresh, transferred = initial_student(teacher, ITSConfig(weight_transfer=False), seed=5)
    assert not transferred and not torch.equal(next(fresh.parameters()), next(teacher.parameters()))
    other_arch, transferred = initial_student(EAN(PRESETS["ean-m"]), ITSConfig(weight_transfer=True), seed=5)
    assert not transferred and other_arch.config == PRESETS["ean-s"]


def test_two_rounds_complete_and_resume_after_an_interruption(tmp_path: Path, toy_npz: Path, capsys) -> None:
    argv = ["distill", "--data", str(toy_npz), "--arch", "ean-s", "--epochs", "1", "--rounds", "2",
            "--workdir", str(tmp_path), "--threads", "2"]
    assert worker_main(argv) == 0
    first = json.loads((tmp_path / "its.json").read_text())
    assert [r["round"] for r in first["rounds"]] == [0, 1, 2]
    assert 0 <= first["rounds"][2]["soft_label_train_agreement"] <= 1
    # Interrupted between rounds: round 2 never finished.
    for name in ("metrics.json", "model.pt", "last.pt", "best.pt"):
        (tmp_path / "round2" / name).unlink()
    capsys.readouterr()
    assert worker_main(argv) == 0
    out = capsys.readouterr().out
    assert "round 0: already done" in out and "round 1: already done" in out and "round 2: cached distillation" in out
    assert (tmp_path / "round2" / "model.pt").exists()


def test_bad_distill_settings_are_rejected(toy_npz: Path, tmp_path: Path, capsys) -> None:
    assert worker_main(["distill", "--data", str(toy_npz), "--alpha", "1.5", "--workdir", str(tmp_path)]) == 2
    assert "alpha" in capsys.readouterr().err
