"""Channel pruning: the importance by hand, exact channel counts, dense rebuild and ONNX, ratio planning,
local retraining that leaves frozen layers bit-identical, and the prune + quantize CLIs on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch_pruning as tp
from torch import nn

from compression_worker.cli import main as worker_main
from compression_worker.export import PARITY_TOLERANCE, export_onnx, parity_error
from compression_worker.model.ean import EAN, EANConfig, count_parameters
from compression_worker.prune.importance import L2GammaImportance, make_importance
from compression_worker.prune.ratios import RatioPolicy, plan_keep
from compression_worker.prune.retrain import changed_modules, only_training
from compression_worker.prune.structure import (
    channel_dims,
    dependency_graph,
    eca_kernels_of,
    macs_of,
    prune_channels,
    reduction_to_budget,
)
from compression_worker.training.checkpoint import load_model, save_model
from compression_worker.training.trainer import OptimConfig, Trainer
from edgefer.datasets import Faces
from edgefer.onnx_model import OnnxFaceClassifier
from tests.conftest import synthetic_faces

TINY = EANConfig(stem_channels=8, widths=(16, 24, 32), depths=(1, 2, 2), dropout=0.0)


def varied(config: EANConfig = TINY, seed: int = 0) -> EAN:
    """Random weights with varied BatchNorm gammas and statistics, as a trained net has."""
    torch.manual_seed(seed)
    model = EAN(config)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.1, 1.5)
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_l2_gamma_importance_equals_a_hand_computation() -> None:
    conv, bn = nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4)
    net = nn.Sequential(conv, bn, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        conv.weight.copy_(torch.arange(36, dtype=torch.float32).reshape(4, 1, 3, 3) / 10)
        bn.weight.copy_(torch.tensor([0.5, -2.0, 1.0, 0.25]))
    graph = tp.DependencyGraph().build_dependency(net, torch.randn(1, 1, 8, 8))
    group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=[0, 1, 2, 3])
    l2 = conv.weight.detach().flatten(1).norm(dim=1)
    gamma = bn.weight.detach().abs()
    for w in (0.5, 0.8):
        expected = w * l2 / l2.mean() + (1 - w) * gamma / gamma.mean()
        torch.testing.assert_close(L2GammaImportance(w)(group), expected)


def test_pruned_ean_is_a_smaller_dense_ean_with_exact_channels_and_onnx_parity(tmp_path: Path) -> None:
    model = varied()
    keep = {"stem": 5, "stage1": 10, "stage2": 13, "stage3": 20}
    pruned = prune_channels(model, keep, make_importance("l2-gamma"))
    assert (pruned.config.stem_channels, pruned.config.widths) == (5, (10, 13, 20))
    assert eca_kernels_of(pruned) == eca_kernels_of(model)  # trained ECA kernels kept
    assert pruned.stem[0].weight.shape == (5, 1, 3, 3) and pruned.classifier.in_features == 20
    assert count_parameters(pruned) < count_parameters(model)
    save_model(pruned, tmp_path / "p.pt")
    reloaded = load_model(tmp_path / "p.pt")
    faces = synthetic_faces(16)[0]
    x = torch.from_numpy(faces).float().unsqueeze(1)
    torch.testing.assert_close(reloaded(x), pruned(x))
    export_onnx(pruned, tmp_path / "p.onnx")
    assert parity_error(pruned, tmp_path / "p.onnx", faces) < PARITY_TOLERANCE
    assert OnnxFaceClassifier(tmp_path / "p.onnx").logits(faces).shape == (16, 7)


def test_the_highest_scoring_channels_are_the_ones_kept() -> None:
    model = varied()
    importance = make_importance("l2-gamma")
    dims = {d.key: d for d in channel_dims(model, dependency_graph(model), importance)}
    best = torch.argsort(dims["stage3"].scores, descending=True)[:8].sort().values
    pruned = prune_channels(model, {"stage3": 8}, importance)
    torch.testing.assert_close(pruned.classifier.weight, model.classifier.weight[:, best])


@pytest.mark.parametrize("mode", ["derived", "uniform"])
def test_ratio_plan_meets_the_mac_target_within_floor_and_cap(mode: str) -> None:
    model = varied()
    dims = channel_dims(model, dependency_graph(model), make_importance("l2-gamma"))
    policy = RatioPolicy(mode, min_keep_fraction=0.25, max_ratio=0.75, channel_multiple=4)
    keep = plan_keep(model.config, eca_kernels_of(model), dims, 0.5, policy)
    pruned = prune_channels(model, keep, make_importance("l2-gamma"))
    ratio = macs_of(pruned.config) / macs_of(model.config)
    assert 0.4 < ratio <= 0.5
    assert all(keep[d.key] >= policy.floor(d.channels) >= d.channels / 4 for d in dims)
    assert all(keep[d.key] % 4 == 0 or keep[d.key] == d.channels for d in dims)  # whole channel blocks
    with pytest.raises(ValueError, match="not reachable"):
        plan_keep(model.config, eca_kernels_of(model), dims, 0.97, policy)


def test_a_budget_of_every_pass_asks_for_the_reduction_that_fits_both_mirror_passes() -> None:
    config = varied().config
    per_pass = macs_of(config)
    assert reduction_to_budget(config, 4 * per_pass) < 0  # fits already
    needed = reduction_to_budget(config, per_pass)  # the mirror-averaged graph runs two passes
    assert 0.5 < needed < 0.52  # half, and the margin under the budget
    assert 2 * (1 - needed) * per_pass <= per_pass


def test_local_retraining_changes_only_the_touched_layers(tmp_path: Path) -> None:
    model = varied()
    pruned = prune_channels(model, {"stage3": 20}, make_importance("l2-gamma"))
    touched = changed_modules(model, pruned)
    assert touched == {"blocks.3.pw.0", "blocks.3.pw.1", "blocks.4.dw.0", "blocks.4.dw.1", "blocks.4.pw.0",
                       "blocks.4.pw.1", "classifier"}
    before = {k: v.clone() for k, v in pruned.state_dict().items()}
    x, y = synthetic_faces(256)
    faces = Faces(x, y, "synthetic")
    with only_training(pruned, touched):
        Trainer(pruned, OptimConfig(epochs=1, batch_size=64, lr=0.05), tmp_path, torch.device("cpu")).fit(faces, faces)
    after = pruned.state_dict()
    for name, tensor in after.items():
        module = name.rsplit(".", 1)[0]
        if module in touched:
            if name.endswith(("weight", "bias")):
                assert not torch.equal(tensor, before[name]), f"{name} was not trained"
        elif not name.endswith("num_batches_tracked"):
            assert torch.equal(tensor, before[name]), f"{name} changed although frozen"
    assert all(p.requires_grad for p in pruned.parameters())  # restored afterwards


def test_prune_and_quantize_cli_end_to_end(tmp_path: Path, toy_npz: Path, capsys) -> None:
    base = varied(EANConfig(stem_channels=8, widths=(16, 32), depths=(1, 2), dropout=0.0))
    save_model(base, tmp_path / "distilled.pt")
    args = ["prune", "--model", str(tmp_path / "distilled.pt"), "--data", str(toy_npz), "--test-data", str(toy_npz),
            "--workdir", str(tmp_path / "prune"), "--target", "0.5", "--steps", "2", "--local-epochs", "1",
            "--finetune-epochs", "1", "--channel-multiple", "4", "--threads", "2"]
    assert worker_main(args) == 0
    out = capsys.readouterr().out
    assert "local retraining:" in out and "before  after" in out
    summary = json.loads((tmp_path / "prune" / "prune.json").read_text())
    assert [s["step"] for s in summary["steps"]] == [0, 1, 2]
    assert summary["steps"][2]["macs"] <= 0.5 * summary["steps"][0]["macs"]
    assert json.loads((tmp_path / "prune" / "step1" / "plan.json").read_text())["layers"][0]["layer"] == "stem"
    assert worker_main(args) == 0  # a rerun resumes: every step is already done
    assert capsys.readouterr().out.count("already done") == 2
    onnx_path = tmp_path / "pruned.onnx"
    assert worker_main(["export", "--checkpoint", str(tmp_path / "prune" / "step2" / "model.pt"), "--output", str(onnx_path),
                        "--test-data", str(toy_npz), "--parity-faces", "32"]) == 0
    int8 = tmp_path / "pruned-int8.onnx"
    assert worker_main(["quantize", "--model", str(onnx_path), "--output", str(int8), "--data", str(toy_npz),
                        "--calibration-faces", "70", "--test-data", str(toy_npz)]) == 0
    card = json.loads(int8.with_suffix(".json").read_text())
    float_card = json.loads(onnx_path.with_suffix(".json").read_text())
    assert card["training"]["quantized_from"] == str(onnx_path)
    assert (card["macs_per_face"], card["onnx_params"]) == (float_card["macs_per_face"], float_card["onnx_params"])
    probs = OnnxFaceClassifier(int8).probabilities(synthetic_faces(8)[0])
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)


def test_impossible_prune_settings_fail_with_a_message(tmp_path: Path, toy_npz: Path, capsys) -> None:
    save_model(varied(), tmp_path / "m.pt")
    assert worker_main(["prune", "--model", str(tmp_path / "m.pt"), "--data", str(toy_npz), "--target", "1.5",
                        "--workdir", str(tmp_path / "w")]) == 2
    assert "target MAC reduction must be in (0, 1)" in capsys.readouterr().err


def test_prune_can_take_its_soft_labels_from_a_larger_teacher(tmp_path: Path, toy_npz: Path) -> None:
    from compression_worker.distill.soft_labels import SoftLabelSpec, teacher_soft_labels
    from compression_worker.training.run import DataConfig, load_splits

    small = varied(EANConfig(stem_channels=8, widths=(16, 32), depths=(1, 2), dropout=0.0))
    large = varied(EANConfig(stem_channels=8, widths=(24, 48), depths=(1, 2), dropout=0.0), seed=1)
    save_model(small, tmp_path / "distilled.pt")
    save_model(large, tmp_path / "teacher.pt")
    common = ["prune", "--model", str(tmp_path / "distilled.pt"), "--data", str(toy_npz), "--target", "0.5",
              "--local-epochs", "0", "--finetune-epochs", "1", "--channel-multiple", "4", "--threads", "2"]
    assert worker_main([*common, "--workdir", str(tmp_path / "own")]) == 0
    assert worker_main([*common, "--workdir", str(tmp_path / "taught"), "--teacher", str(tmp_path / "teacher.pt")]) == 0
    splits = load_splits(DataConfig(toy_npz, None, 0.1, 0, None))
    from compression_worker.distill.teachers import TorchTeacher

    teacher = TorchTeacher(large, torch.device("cpu"))
    expected = teacher_soft_labels(teacher, splits.train.x, SoftLabelSpec(2.0, True), torch.device("cpu"))
    taught = np.load(tmp_path / "taught" / "soft_labels.npz")
    own = np.load(tmp_path / "own" / "soft_labels.npz")
    np.testing.assert_allclose(taught["probs"], expected, atol=1e-6)
    assert not np.allclose(own["probs"], expected, atol=1e-3)
    assert str(taught["spec"]) != str(own["spec"])  # the cache is keyed by the teacher: no stale labels across teachers
    summary = json.loads((tmp_path / "taught" / "prune.json").read_text())
    assert summary["teacher"] == str(tmp_path / "teacher.pt") and summary["pruned_from"] == str(tmp_path / "distilled.pt")
