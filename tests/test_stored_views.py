"""Distillation from stored views on tiny data: the student trains on exactly the pixels the teacher labelled, the
views are made once (resumed view by view, shared between runs of one teacher, refused for another teacher)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from compression_worker.cli import main as worker_main
from compression_worker.distill.teachers import TorchTeacher
from compression_worker.distill.views import ViewCacheError, ViewInputs, make_views, view_kd_criterion, view_spec
from compression_worker.export import export_onnx
from compression_worker.model.ean import EAN, EANConfig
from compression_worker.training.trainer import OptimConfig, Trainer
from edgefer.datasets import load_faces, stratified_split
from edgefer.jobs.recipe import AugmentConfig

CPU = torch.device("cpu")
TINY = EANConfig(stem_channels=8, widths=(16, 24, 32, 48), depths=(1, 1, 1, 1), dropout=0.0)


def test_the_student_trains_on_the_very_pixels_the_teacher_labelled(tmp_path: Path, toy_npz: Path) -> None:
    torch.manual_seed(0)
    faces = load_faces(toy_npz)
    train_idx, val_idx = stratified_split(faces.y, 0.2, seed=0)
    train, val = faces.subset(train_idx), faces.subset(val_idx)
    teacher = TorchTeacher(EAN(TINY), CPU, mirror_average=False)
    spec = view_spec(3, AugmentConfig(), 0, "tiny", train.x)
    views = make_views(tmp_path / "views", teacher, train.x, spec, AugmentConfig(), CPU)
    assert views.images.shape == (3, len(train), 48, 48) and views.images.dtype == torch.uint8
    assert not torch.equal(views.images[0], views.images[1])  # three different augmentations
    assert torch.allclose(views.logits[1, :4], teacher.logits(views.images[1, :4].float().unsqueeze(1)))

    student = EAN(TINY)
    fed: list[torch.Tensor] = []
    student.register_forward_pre_hook(lambda m, args: fed.append(args[0].detach().clone()) if m.training else None)
    inputs = ViewInputs(views, seed=0)
    cfg = OptimConfig(epochs=3, batch_size=32, lr=0.05)
    Trainer(student, cfg, tmp_path / "student", CPU, view_kd_criterion(views, 0.8, 2.0), inputs).fit(train, val)
    stored = {tuple(views.images[k, i].flatten()[:64].tolist()) for k in range(3) for i in range(len(train))}
    assert fed and all(tuple(x[0].to(torch.uint8).flatten()[:64].tolist()) in stored for batch in fed for x in batch)
    assert [int(v) for v in ((inputs.offset[:5] + 4) % 3)] == [int(v) for v in ((inputs.offset[:5] + 1) % 3)]


def test_views_are_resumed_view_by_view_and_never_reused_for_another_teacher(tmp_path: Path, toy_npz: Path,
                                                                              capsys) -> None:
    torch.manual_seed(0)
    for name in ("a", "b"):
        export_onnx(EAN(TINY), tmp_path / f"teacher-{name}.onnx")
    cache = tmp_path / "views"
    argv = ["distill", "--mode", "views", "--views", "2", "--view-cache", str(cache), "--teacher",
            str(tmp_path / "teacher-a.onnx"), "--data", str(toy_npz), "--arch", "ean-xs", "--epochs", "2",
            "--rounds", "1", "--split-seed", "0", "--threads", "2"]  # one split: the views fit every seed
    assert worker_main([*argv, "--workdir", str(tmp_path / "w1")]) == 0
    assert sorted(p.name for p in cache.iterdir()) == ["spec.json", "view0.npz", "view1.npz"]
    summary = json.loads((tmp_path / "w1" / "its.json").read_text())
    assert summary["rounds"][1]["views"] == 2 and summary["its"]["mode"] == "views"
    made = (cache / "view0.npz").stat().st_mtime_ns
    (cache / "view1.npz").unlink()  # a build cut short: only the missing view is made again
    capsys.readouterr()
    assert worker_main([*argv, "--workdir", str(tmp_path / "w2"), "--seed", "1"]) == 0  # another student seed
    assert "view 2/2 made" in capsys.readouterr().out and (cache / "view0.npz").stat().st_mtime_ns == made
    other = [a if a != str(tmp_path / "teacher-a.onnx") else str(tmp_path / "teacher-b.onnx") for a in argv]
    assert worker_main([*other, "--workdir", str(tmp_path / "w3")]) == 2
    assert "views made for another teacher" in capsys.readouterr().err
    assert worker_main([*argv, "--workdir", str(tmp_path / "w4"), "--mixup", "0.2"]) == 2
    assert "turn mixup and CutMix off" in capsys.readouterr().err


def test_a_views_folder_names_what_it_was_made_for(tmp_path: Path) -> None:
    x = np.zeros((4, 48, 48), np.uint8)
    teacher = TorchTeacher(EAN(TINY), CPU, mirror_average=False)
    make_views(tmp_path, teacher, x, view_spec(1, AugmentConfig(), 0, "t", x), AugmentConfig(), CPU)
    with pytest.raises(ViewCacheError, match="another augment, views"):
        make_views(tmp_path, teacher, x, view_spec(2, AugmentConfig(hflip_prob=0.0), 0, "t", x), AugmentConfig(), CPU)


def test_pruning_retrains_on_the_views_its_student_was_distilled_from(tmp_path: Path, toy_npz: Path, capsys) -> None:
    """The same teacher, faces and augmentation: pruning reads the distillation's views and makes none."""
    torch.manual_seed(0)
    export_onnx(EAN(TINY), tmp_path / "teacher.onnx")
    cache = tmp_path / "views"
    common = ["--data", str(toy_npz), "--split-seed", "0", "--threads", "2"]
    assert worker_main(["distill", "--mode", "views", "--views", "2", "--view-cache", str(cache), "--teacher",
                        str(tmp_path / "teacher.onnx"), "--arch", "ean-xs", "--epochs", "1", "--rounds", "1",
                        "--workdir", str(tmp_path / "distill"), *common]) == 0
    made = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    capsys.readouterr()
    assert worker_main(["prune", "--model", str(tmp_path / "distill" / "round1" / "model.pt"), "--target", "0.4",
                        "--prune.distill-mode", "views", "--prune.views", "2", "--prune.view-cache", str(cache),
                        "--prune.teacher", str(tmp_path / "teacher.onnx"), "--local-epochs", "1",
                        "--finetune-epochs", "1", "--workdir", str(tmp_path / "prune"), *common]) == 0
    assert "made" not in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == made
    summary = json.loads((tmp_path / "prune" / "prune.json").read_text())
    assert summary["prune"]["distill_mode"] == "views" and summary["steps"][-1]["macs"] < summary["steps"][0]["macs"]
    assert worker_main(["prune", "--model", str(tmp_path / "distill" / "round1" / "model.pt"), "--target", "0.4",
                        "--prune.distill-mode", "views", "--mixup", "0.2", "--workdir", str(tmp_path / "p2"),
                        *common]) == 2
    assert "turn mixup and CutMix off" in capsys.readouterr().err
