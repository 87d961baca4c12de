"""The worker and edge CLIs end to end on tiny data: train, export, evaluate, classify, and bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from compression_worker.cli import main as worker_main
from edgefer.cli.classify import main as classify_main


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, toy_npz: Path) -> Path:
    work = tmp_path_factory.mktemp("run")
    assert worker_main(["train", "--data", str(toy_npz), "--arch", "ean-s", "--epochs", "1", "--workdir", str(work / "t"),
                        "--threads", "2"]) == 0
    summary = json.loads((work / "t" / "summary.json").read_text())
    assert summary["command"].startswith("edgefer-worker") and summary["params"] > 0
    out = work / "m.onnx"
    assert worker_main(["export", "--checkpoint", str(work / "t" / "model.pt"), "--output", str(out),
                        "--test-data", str(toy_npz), "--parity-faces", "32"]) == 0
    return out


def test_export_writes_model_card_and_confusion_png(exported: Path) -> None:
    card = json.loads(exported.with_suffix(".json").read_text())
    assert card["file"] == "m.onnx" and card["macs_per_face"] > 0 and card["params"] > card["macs_per_face"] / 1e3
    assert set(card["evaluation"]["toy"]["per_class_recall"]) >= {"angry", "neutral"}
    assert card["training"]["optim"]["epochs"] == 1
    assert (exported.parent / "m-confusion.png").stat().st_size > 1000


def test_evaluate_writes_metrics(exported: Path, toy_npz: Path, tmp_path: Path, capsys) -> None:
    assert worker_main(["evaluate", "--model", str(exported), "--data", str(toy_npz), "--out-dir", str(tmp_path)]) == 0
    assert "per-class recall" in capsys.readouterr().out
    assert json.loads((tmp_path / "metrics.json").read_text())["count"] == 420
    assert (tmp_path / "confusion.png").exists()


def test_classify_prints_predictions(exported: Path, toy_npz: Path, capsys) -> None:
    assert classify_main(["--model", str(exported), "--data", str(toy_npz), "--show", "3"]) == 0
    assert "faces/s" in capsys.readouterr().out


def test_train_continues_from_a_finished_model(exported: Path, toy_npz: Path, tmp_path: Path) -> None:
    """A warm restart starts from the model's weights (its first epoch already knows the faces) and says so."""
    model = exported.parent / "t" / "model.pt"
    assert worker_main(["train", "--data", str(toy_npz), "--arch", "ean-s", "--epochs", "1", "--init-from", str(model),
                        "--workdir", str(tmp_path / "w"), "--threads", "2"]) == 0
    summary = json.loads((tmp_path / "w" / "summary.json").read_text())
    assert summary["init_from"] == str(model)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--data", "{tmp}/absent.npz", "--epochs", "1"], "absent.npz: no such file"),
        (["evaluate", "--model", "{tmp}/absent.onnx"], "absent.onnx: no such model file"),
        (["evaluate", "--model", "{tmp}/junk.onnx", "--data", "{toy}"], "junk.onnx: onnxruntime cannot load it"),
        (["export", "--checkpoint", "{tmp}/junk.onnx", "--output", "{tmp}/o.onnx"], "junk.onnx: not a readable"),
        (["train", "--data", "{toy}", "--arch", "ean-m", "--init-from", "{model}"], "its architecture is ean-s, but --arch is ean-m"),
    ],
)
def test_bad_input_gives_one_clear_line(
    tmp_path: Path, toy_npz: Path, exported: Path, capsys, argv: list[str], message: str
) -> None:
    (tmp_path / "junk.onnx").write_bytes(b"definitely not onnx")
    args = [a.format(tmp=tmp_path, toy=toy_npz, model=exported.parent / "t" / "model.pt") for a in argv]
    assert worker_main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_edge_path_runs_without_torch(exported: Path, toy_npz: Path) -> None:
    """The edge runtime must never import torch: run the classifier with torch made unimportable."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from edgefer.cli.classify import main\n"
        f"sys.exit(main(['--model', {str(exported)!r}, '--data', {str(toy_npz)!r}, '--show', '1']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr
