"""TLS and mutual TLS from certificate files: a verified client is served, an anonymous one is refused."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import grpc
import pytest

from edgefer.v1 import edge_pb2, edge_pb2_grpc
from services.edge.model_holder import load_onnx_file
from services.edge.server import start_server
from services.edge.settings import EdgeSettings

MODEL = Path(__file__).resolve().parent.parent / "models" / "ean-baseline.onnx"
pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl command not found")


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for localhost and a client certificate, all signed by the CA."""
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
            "-subj", "/CN=edgefer-test-ca", cwd=d)
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "1", "-extfile", "san.ext", cwd=d)
    return d


def info(port: int, credentials: grpc.ChannelCredentials) -> edge_pb2.ModelInfo:
    channel = grpc.secure_channel(f"localhost:{port}", credentials)
    try:
        return edge_pb2_grpc.EdgeFerStub(channel).GetModelInfo(edge_pb2.GetModelInfoRequest(), timeout=5)
    finally:
        channel.close()


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mtls"])
def test_tls_and_mutual_tls(pki: Path, mutual: bool) -> None:
    settings = EdgeSettings(host="127.0.0.1", port=0, metrics_port=0, intra_op_threads=1,
                            tls_cert=pki / "server.pem", tls_key=pki / "server.key",
                            tls_client_ca=pki / "ca.pem" if mutual else None)
    node = start_server(settings)
    node.swap(load_onnx_file(MODEL, threads=1, version="tls"))
    ca = (pki / "ca.pem").read_bytes()
    try:
        with_client_cert = grpc.ssl_channel_credentials(ca, (pki / "client.key").read_bytes(), (pki / "client.pem").read_bytes())
        assert info(node.port, with_client_cert).version == "tls"
        anonymous = grpc.ssl_channel_credentials(ca)
        if mutual:
            with pytest.raises(grpc.RpcError):
                info(node.port, anonymous)
        else:
            assert info(node.port, anonymous).version == "tls"
    finally:
        node.stop(0)
