"""Edge settings: environment variables, flags overriding them, and a bad value named."""

from pathlib import Path

import pytest

from services.edge.main import main as edge_main
from services.edge.settings import EdgeSettings


def test_environment_then_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEFER_PORT", "6000")
    monkeypatch.setenv("EDGEFER_DROP_STALE_FRAMES", "false")
    monkeypatch.setenv("EDGEFER_TLS_CERT", "/certs/node.pem")
    settings = EdgeSettings.from_env()
    assert settings.port == 6000 and settings.drop_stale_frames is False and settings.tls_cert == Path("/certs/node.pem")
    overridden = EdgeSettings.from_args(["--port", "7000", "--drop-stale-frames", "--model-path", "m.onnx"])
    assert overridden.port == 7000 and overridden.drop_stale_frames is True and overridden.model_path == Path("m.onnx")


def test_bad_setting_is_named(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("EDGEFER_MAX_MESSAGE_BYTES", "lots")
    assert edge_main([]) == 2
    assert "setting max_message_bytes: cannot read 'lots' as int" in capsys.readouterr().err


def test_a_node_needs_at_least_one_of_each(capsys) -> None:
    assert edge_main(["--workers", "0"]) == 2
    assert "setting workers must be at least 1, got 0" in capsys.readouterr().err


def test_cores_are_shared_among_processes_and_calls() -> None:
    settings = EdgeSettings(intra_op_threads=4, workers=2, batch_concurrency=1)
    assert settings.process_cores == 2 and settings.session_threads == 2
    assert EdgeSettings(intra_op_threads=2, workers=2, batch_concurrency=2).session_threads == 1
    replica = settings.for_replica(port=50999)
    assert (replica.port, replica.metrics_port, replica.redis_url) == (50999, 0, "")


def still_running(pid: int) -> bool:
    """Neither exited nor a zombie (Linux /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def live_children(pid: int) -> list[int]:
    children = [int(c) for task in Path(f"/proc/{pid}/task").glob("*") for c in (task / "children").read_text().split()]
    return [c for c in children if still_running(c)]


@pytest.mark.parametrize("workers", [1, 2])
def test_node_process_reload_and_graceful_exit(tmp_path: Path, workers: int) -> None:
    """The real entry point: serves, survives SIGHUP with a corrupt file (old model stays), exits on SIGTERM,
    and with two serving processes leaves none behind."""
    import shutil
    import signal
    import subprocess
    import sys
    import time

    import grpc

    from edgefer.v1 import edge_pb2, edge_pb2_grpc
    from tests.conftest import free_port

    model = tmp_path / "current.onnx"
    shutil.copy(Path(__file__).resolve().parent.parent / "models" / "ean-baseline.onnx", model)
    port = free_port()
    node = subprocess.Popen([sys.executable, "-m", "services.edge.main", "--host", "127.0.0.1", "--port", str(port),
                             "--metrics-port", "0", "--model-path", str(model), "--intra-op-threads", "1",
                             "--workers", str(workers)],
                            stderr=subprocess.PIPE, text=True)
    try:
        stub = edge_pb2_grpc.EdgeFerStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        deadline = time.time() + 30
        while True:
            try:
                before = stub.GetModelInfo(edge_pb2.GetModelInfoRequest(), timeout=1)
                break
            except grpc.RpcError:
                assert time.time() < deadline, "node did not come up"
                time.sleep(0.2)
        model.write_bytes(b"corrupt")
        node.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert stub.GetModelInfo(edge_pb2.GetModelInfoRequest(), timeout=2).sha256 == before.sha256
        replicas = [c for c in live_children(node.pid) if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
        assert len(replicas) == workers - 1
        node.send_signal(signal.SIGTERM)
        assert node.wait(timeout=20) == 0
        assert "model not swapped" in node.stderr.read()
        deadline = time.time() + 10
        while any(still_running(pid) for pid in replicas):
            assert time.time() < deadline, "a serving replica outlived its node"
            time.sleep(0.1)
    finally:
        if node.poll() is None:
            node.kill()
