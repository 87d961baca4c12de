"""The device client against a real node: a folder of images streamed, annotated video, reconnecting."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from services.client.main import main as client_main
from services.client.sources import SourceError, open_source
from services.edge.model_holder import load_onnx_file
from services.edge.server import start_server
from services.edge.settings import EdgeSettings
from tests.conftest import free_port

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "models" / "ean-baseline.onnx"


def start_node(port: int = 0):
    node = start_server(EdgeSettings(host="127.0.0.1", port=port, metrics_port=0, intra_op_threads=1))
    node.swap(load_onnx_file(MODEL, threads=1, version="v1"))
    return node


@pytest.fixture()
def image_folder(tmp_path: Path) -> Path:
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), np.full((120, 160, 3), 40 * i, np.uint8))
    return tmp_path


def test_streams_a_folder_and_writes_an_annotated_video(image_folder: Path, tmp_path: Path, capsys) -> None:
    node = start_node()
    try:
        out = tmp_path / "annotated.avi"
        code = client_main(["--target", f"127.0.0.1:{node.port}", "--source", str(image_folder), "--fps", "40",
                            "--output", str(out)])
    finally:
        node.stop(0)
    assert code == 0
    printed = capsys.readouterr().out
    assert "5 frames sent" in printed and "['v1']" in printed
    assert out.stat().st_size > 0


def test_reconnects_when_the_node_comes_up_late(image_folder: Path, capsys) -> None:
    port = free_port()
    holder: list = []
    timer = threading.Timer(1.0, lambda: holder.append(start_node(port)))
    timer.start()
    try:
        code = client_main(["--target", f"127.0.0.1:{port}", "--source", str(image_folder), "--fps", "20",
                            "--loop", "--max-frames", "30", "--quiet"])
    finally:
        timer.join()
        for node in holder:
            node.stop(0)
    assert code == 0
    summary = capsys.readouterr().out
    assert "reconnects 0" not in summary and "ok" in summary


@pytest.mark.parametrize("node_up", [True, False], ids=["streaming", "reconnecting"])
def test_ctrl_c_stops_the_client_with_its_summary(image_folder: Path, node_up: bool) -> None:
    port, metrics_port = free_port(), free_port()
    node = start_node(port) if node_up else None
    client = subprocess.Popen([sys.executable, "-m", "services.client.main", "--target", f"127.0.0.1:{port}",
                               "--source", str(image_folder), "--fps", "20", "--loop", "--quiet",
                               "--metrics-port", str(metrics_port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        # Up once its metrics answer (its start-up took 3 s on a loaded runner), then 3 s of streaming or retrying.
        deadline = time.monotonic() + 60
        while not _answers(f"http://127.0.0.1:{metrics_port}/metrics"):
            assert client.poll() is None and time.monotonic() < deadline, "the client did not come up"
            time.sleep(0.2)
        time.sleep(3.0)
        assert client.poll() is None  # a looping source never ends by itself
        client.send_signal(signal.SIGINT)
        out, err = client.communicate(timeout=10)
    finally:
        client.kill()
        if node is not None:
            node.stop(0)
    assert client.returncode == 0, err
    assert "frames sent" in out
    assert ("reconnects 0" in out) == node_up


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


def test_bad_sources_are_named(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such video file"):
        open_source(str(tmp_path / "absent.mp4"))
    with pytest.raises(SourceError, match="no images"):
        open_source(str(tmp_path))
    (tmp_path / "x.mp4").write_bytes(b"not a video")
    with pytest.raises(SourceError, match="cannot be opened"):
        open_source(str(tmp_path / "x.mp4"))


def test_client_metrics_count_results_and_observe_latency(image_folder: Path) -> None:
    from services.client.main import DeviceClient
    from services.client.metrics import ClientMetrics

    node = start_node()
    metrics = ClientMetrics()
    try:
        DeviceClient(f"127.0.0.1:{node.port}", 40, quiet=True, metrics=metrics).run(open_source(str(image_folder), False))
    finally:
        node.stop(0)
    sample = metrics.registry.get_sample_value
    ok, dropped = (sample("edgefer_client_frames_total", {"status": s}) for s in ("ok", "dropped"))
    assert ok + dropped == 5 and ok >= 1  # a node slowed by a busy runner drops stale frames (latest frame wins)
    assert sample("edgefer_client_latency_seconds_count") == ok and sample("edgefer_client_latency_seconds_sum") > 0
    assert sample("edgefer_client_frames_total", {"status": "invalid"}) == 0  # every status exists from the start
