"""ONNX export: contract (names, dynamic batch, opset, metadata), parity with PyTorch, and MAC counting."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from compression_worker.complexity import onnx_complexity
from compression_worker.export import PARITY_TOLERANCE, export_onnx, parity_error
from compression_worker.model.ean import EAN, EANConfig
from edgefer.onnx_model import OnnxFaceClassifier
from tests.conftest import synthetic_faces

TINY = EANConfig(stem_channels=8, widths=(16, 32), depths=(1, 2), dropout=0.0)


@pytest.fixture(scope="module")
def trained_like_model() -> EAN:
    """Random but non-trivial BatchNorm statistics, so folding them is really exercised."""
    torch.manual_seed(0)
    model = EAN(TINY)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("mirror", [True, False])
def test_onnxruntime_matches_pytorch(tmp_path: Path, trained_like_model: EAN, mirror: bool) -> None:
    path = export_onnx(trained_like_model, tmp_path / "m.onnx", mirror_average=mirror)
    faces, _ = synthetic_faces(64)
    assert parity_error(trained_like_model, path, faces, mirror_average=mirror) < PARITY_TOLERANCE


def test_real_faces_parity(tmp_path: Path, trained_like_model: EAN, real_fer: Path) -> None:
    faces = np.load(real_fer / "test_public.npz")["x"][:256]
    path = export_onnx(trained_like_model, tmp_path / "m.onnx")
    assert parity_error(trained_like_model, path, faces) < PARITY_TOLERANCE


def test_graph_contract(tmp_path: Path, trained_like_model: EAN) -> None:
    path = export_onnx(trained_like_model, tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [i.name for i in proto.graph.input] == ["faces"] and [o.name for o in proto.graph.output] == ["logits"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["edgefer.classes"])[0] == "angry"
    classifier = OnnxFaceClassifier(path)
    for n in (1, 5):
        assert classifier.logits(np.zeros((n, 48, 48), np.uint8)).shape == (n, 7)
    assert classifier.metadata["edgefer.mirror_average"] == "true"


def test_macs_counted_on_the_graph_match_a_hand_count(tmp_path: Path) -> None:
    cfg = EANConfig(stem_channels=4, widths=(8,), depths=(1,), dropout=0.0)
    model = EAN(cfg).eval()
    stem = 48 * 48 * 4 * 9  # 1 -> 4 channels, 3x3, 48x48
    dw = 24 * 24 * 4 * 9  # depthwise 3x3 stride 2 on 4 channels
    pw = 24 * 24 * 4 * 8  # 1x1, 4 -> 8
    eca = 8 * 3  # 1-D conv, k=3, over 8 channels
    fc = 8 * 7
    single = stem + dw + pw + eca + fc
    assert onnx_complexity(export_onnx(model, tmp_path / "a.onnx", mirror_average=False)).macs == single
    assert onnx_complexity(export_onnx(model, tmp_path / "b.onnx", mirror_average=True)).macs == 2 * single


def test_fp16_weights_halve_a_dense_teacher_and_keep_its_predictions(tmp_path: Path) -> None:
    from compression_worker.model.teacher_nets import FaceVGG, TeacherConfig
    from compression_worker.onnx_fp16 import prediction_agreement, store_weights_fp16

    torch.manual_seed(0)
    teacher = FaceVGG(TeacherConfig(widths=(16, 32, 64, 64), depths=(1, 1, 1, 1), dropout=0.0)).eval()
    full = export_onnx(teacher, tmp_path / "teacher.onnx")
    half = tmp_path / "teacher-fp16.onnx"
    assert store_weights_fp16(full, half) > 0
    assert half.stat().st_size < 0.6 * full.stat().st_size
    assert onnx_complexity(half).macs == onnx_complexity(full).macs > 0  # the card counts through the Casts
    faces, _ = synthetic_faces(64)
    assert prediction_agreement(full, half, faces, threads=1) >= 0.95
    logits = OnnxFaceClassifier(half).logits(faces)
    assert logits.dtype == np.float32 and np.allclose(logits, OnnxFaceClassifier(full).logits(faces), atol=5e-2)


def test_int8_weights_quarter_a_dense_teacher_keep_its_predictions_and_say_so_in_its_card(
    tmp_path: Path, toy_npz: Path
) -> None:
    from compression_worker.cli import main as worker_main
    from compression_worker.model.teacher_nets import FaceVGG, TeacherConfig
    from compression_worker.training.checkpoint import save_model

    torch.manual_seed(0)
    save_model(FaceVGG(TeacherConfig(widths=(32, 64, 64, 128), depths=(1, 1, 1, 1), dropout=0.0)).eval(),
               tmp_path / "teacher.pt")
    common = ["export", "--checkpoint", str(tmp_path / "teacher.pt"), "--test-data", str(toy_npz), "--threads", "1"]
    assert worker_main([*common, "--output", str(tmp_path / "fp32.onnx")]) == 0
    assert worker_main([*common, "--output", str(tmp_path / "int8.onnx"), "--weights", "int8", "--data", str(toy_npz),
                        "--calibration-faces", "140"]) == 0
    assert (tmp_path / "int8.onnx").stat().st_size < 0.35 * (tmp_path / "fp32.onnx").stat().st_size
    card = json.loads((tmp_path / "int8.json").read_text())
    assert card["training"]["weights"]["storage"] == "int8"
    assert card["training"]["weights"]["agreement_with_fp32"] >= 0.97
    assert not (tmp_path / "int8.fp32.onnx").exists()  # the fp32 graph it was checked against is gone
    faces, _ = synthetic_faces(64, seed=1)
    logits = OnnxFaceClassifier(tmp_path / "int8.onnx").logits(faces)
    assert logits.dtype == np.float32 and logits.shape == (64, 7)
