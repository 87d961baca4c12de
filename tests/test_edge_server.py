"""The edge gRPC server for real on loopback: results match onnxruntime, order, health, bad input, drops, swaps."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgefer.onnx_model import OnnxFaceClassifier, softmax
from edgefer.v1 import edge_pb2, edge_pb2_grpc
from services.edge.model_holder import load_onnx_file
from services.edge.server import SERVICE_NAME, start_server
from services.edge.settings import EdgeSettings
from tests.conftest import synthetic_faces

MODEL = Path(__file__).resolve().parent.parent / "models" / "ean-baseline.onnx"


@pytest.fixture(params=[False], ids=["direct"])
def node(request):
    settings = EdgeSettings(host="127.0.0.1", port=0, metrics_port=0, intra_op_threads=1, max_message_bytes=1 << 20,
                            batch_across_streams=request.param)
    running = start_server(settings)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    yield running, edge_pb2_grpc.EdgeFerStub(channel), health_pb2_grpc.HealthStub(channel)
    channel.close()
    running.stop(0)


def with_model(running, version: str = "v1"):
    running.swap(load_onnx_file(MODEL, threads=1, version=version))
    return running


def crop_frame(face: np.ndarray, sequence: int = 0) -> edge_pb2.Frame:
    raw = edge_pb2.RawImage(width=48, height=48, format=edge_pb2.PIXEL_FORMAT_GRAY, pixels=face.tobytes())
    return edge_pb2.Frame(sequence=sequence, raw=raw, is_face_crop=True)


def health_status(health_stub, service: str = SERVICE_NAME) -> int:
    return health_stub.Check(health_pb2.HealthCheckRequest(service=service)).status


def test_not_serving_until_a_model_is_loaded(node) -> None:
    running, stub, health_stub = node
    assert health_status(health_stub) == health_pb2.HealthCheckResponse.NOT_SERVING
    with pytest.raises(grpc.RpcError) as info:
        stub.GetModelInfo(edge_pb2.GetModelInfoRequest())
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    with_model(running)
    assert health_status(health_stub) == health_pb2.HealthCheckResponse.SERVING
    assert stub.GetModelInfo(edge_pb2.GetModelInfoRequest()).version == "v1"


BOTH_INFERENCE_MODES = pytest.mark.parametrize("node", [False, True], ids=["direct", "batched"], indirect=True)


@BOTH_INFERENCE_MODES
def test_unary_and_stream_match_onnxruntime(node) -> None:
    running, stub, _ = node
    with_model(running)
    faces, _ = synthetic_faces(12)
    expected = softmax(OnnxFaceClassifier(MODEL).logits(faces))
    unary = [stub.Classify(edge_pb2.ClassifyRequest(frame=crop_frame(f, i))).result for i, f in enumerate(faces)]
    sha256 = hashlib.sha256(MODEL.read_bytes()).hexdigest()  # the bytes that answered, beside their number
    assert all(r.model_version == "v1" and r.model_sha256 == sha256 and r.sequence == i for i, r in enumerate(unary))
    assert np.allclose([r.faces[0].probabilities for r in unary], expected, atol=1e-5)
    streamed = list(stub.StreamClassify(iter([crop_frame(f, 100 + i) for i, f in enumerate(faces)])))
    assert [r.sequence for r in streamed] == [100 + i for i in range(12)]
    ok = [r for r in streamed if r.status == edge_pb2.FRAME_STATUS_OK]
    for r in ok:
        assert np.allclose(r.faces[0].probabilities, expected[r.sequence - 100], atol=1e-5)
        assert r.model_sha256 == sha256
    info = stub.GetModelInfo(edge_pb2.GetModelInfoRequest())
    assert info.sha256 == sha256 and info.epoch == ""  # a file served without a registry has no epoch
    assert list(info.class_bias) == []  # the graph as trained


def test_a_balanced_graph_says_what_it_adds_to_the_logits_and_a_broken_one_is_refused(node, tmp_path: Path) -> None:
    import json

    import onnx

    from compression_worker.class_balance import add_output_bias
    from services.edge.model_holder import ModelLoadError

    running, stub, _ = node
    bias = np.array([0.3, 2.7, 0.3, -0.4, 0.1, 0.5, 0.1], np.float32)
    balanced = add_output_bias(MODEL, tmp_path / "balanced.onnx", bias)
    running.swap(load_onnx_file(balanced, threads=1, version="v2"))
    info = stub.GetModelInfo(edge_pb2.GetModelInfoRequest())
    assert np.allclose(info.class_bias, bias, atol=1e-6)
    faces, _ = synthetic_faces(4)
    result = stub.Classify(edge_pb2.ClassifyRequest(frame=crop_frame(faces[0]))).result
    expected = softmax(OnnxFaceClassifier(MODEL).logits(faces[:1]) + bias)[0]
    assert np.allclose(result.faces[0].probabilities, expected, atol=1e-5)

    broken = onnx.load(str(balanced))
    next(e for e in broken.metadata_props if e.key == "edgefer.class_bias").value = json.dumps([1.0, 2.0])
    onnx.save(broken, str(tmp_path / "broken.onnx"))
    with pytest.raises(ModelLoadError, match="2 values for 7 classes"):
        load_onnx_file(tmp_path / "broken.onnx", threads=1, version="v3")


def test_detection_path_on_an_encoded_frame(node) -> None:
    running, stub, _ = node
    with_model(running)
    ok, jpeg = cv2.imencode(".jpg", np.full((480, 640), 120, np.uint8))
    result = stub.Classify(edge_pb2.ClassifyRequest(frame=edge_pb2.Frame(sequence=7, encoded=jpeg.tobytes()))).result
    assert result.status == edge_pb2.FRAME_STATUS_OK and len(result.faces) == 0


@pytest.mark.parametrize(
    "frame,code",
    [
        (edge_pb2.Frame(encoded=b"junk"), grpc.StatusCode.INVALID_ARGUMENT),
        (edge_pb2.Frame(raw=edge_pb2.RawImage(width=0, height=4, format=1)), grpc.StatusCode.INVALID_ARGUMENT),
        (edge_pb2.Frame(raw=edge_pb2.RawImage(width=4, height=4, format=1, pixels=b"abc")), grpc.StatusCode.INVALID_ARGUMENT),
        (edge_pb2.Frame(raw=edge_pb2.RawImage(width=4, height=4, format=9, pixels=bytes(16))), grpc.StatusCode.INVALID_ARGUMENT),
        (edge_pb2.Frame(raw=edge_pb2.RawImage(width=90000, height=90000, format=1)), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (edge_pb2.Frame(encoded=bytes(2 << 20)), grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
)
def test_bad_input_gets_a_status_and_the_server_lives_on(node, frame, code) -> None:
    running, stub, _ = node
    with_model(running)
    with pytest.raises(grpc.RpcError) as info:
        stub.Classify(edge_pb2.ClassifyRequest(frame=frame))
    assert info.value.code() == code and info.value.details()
    faces, _ = synthetic_faces(1)
    assert stub.Classify(edge_pb2.ClassifyRequest(frame=crop_frame(faces[0]))).result.status == edge_pb2.FRAME_STATUS_OK


def test_a_bad_frame_in_a_stream_gets_an_error_result_and_the_stream_goes_on(node) -> None:
    running, stub, _ = node
    with_model(running)
    faces, _ = synthetic_faces(2)
    frames = [crop_frame(faces[0], 1), edge_pb2.Frame(sequence=2, encoded=b"junk"), crop_frame(faces[1], 3)]

    def paced():  # slower than the node, so that nothing is dropped
        for frame in frames:
            yield frame
            time.sleep(0.05)

    results = list(stub.StreamClassify(paced()))
    assert [r.sequence for r in results] == [1, 2, 3]
    assert results[1].status == edge_pb2.FRAME_STATUS_INVALID and "decodable" in results[1].error
    assert results[2].status == edge_pb2.FRAME_STATUS_OK


def test_overload_drops_stale_frames_but_answers_every_frame(node) -> None:
    running, stub, _ = node
    with_model(running)
    big = np.random.default_rng(0).integers(0, 255, (480, 640), dtype=np.uint8)
    frames = [edge_pb2.Frame(sequence=i, raw=edge_pb2.RawImage(width=640, height=480, format=1, pixels=big.tobytes()))
              for i in range(60)]
    results = list(stub.StreamClassify(iter(frames)))
    assert [r.sequence for r in results] == list(range(60))
    statuses = [r.status for r in results]
    assert edge_pb2.FRAME_STATUS_DROPPED in statuses and statuses[-1] == edge_pb2.FRAME_STATUS_OK
    assert running.metrics.dropped._value.get() == statuses.count(edge_pb2.FRAME_STATUS_DROPPED)


@BOTH_INFERENCE_MODES
def test_swap_during_eight_streams_loses_nothing(node) -> None:
    running, stub, _ = node
    with_model(running, "v1")
    faces, _ = synthetic_faces(40)
    results: list[list[edge_pb2.FrameResult]] = [[] for _ in range(8)]
    errors: list[Exception] = []

    def paced():
        for i, face in enumerate(faces):
            time.sleep(0.01)
            yield crop_frame(face, i)

    def stream(k: int) -> None:
        try:
            results[k] = list(stub.StreamClassify(paced()))
        except Exception as exc:  # collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=stream, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    with_model(running, "v2")
    for t in threads:
        t.join()
    assert not errors
    versions = set()
    for per_stream in results:
        assert [r.sequence for r in per_stream] == list(range(40))
        ok = [r for r in per_stream if r.status == edge_pb2.FRAME_STATUS_OK]
        assert ok and all(r.model_version in ("v1", "v2") for r in ok)
        versions |= {r.model_version for r in ok}
    assert versions == {"v1", "v2"}


def test_metrics_use_prometheus_names(node) -> None:
    from prometheus_client import generate_latest

    running, stub, _ = node
    with_model(running)
    faces, _ = synthetic_faces(1)
    stub.Classify(edge_pb2.ClassifyRequest(frame=crop_frame(faces[0])))
    text = generate_latest(running.metrics.registry).decode()
    for name in ("edgefer_request_latency_seconds_bucket", "edgefer_frames_total", "edgefer_faces_total",
                 "edgefer_dropped_frames_total", "edgefer_errors_total", "edgefer_active_streams",
                 "edgefer_model_info", "edgefer_model_swaps_total"):
        assert name in text, name
    assert 'stage="infer"' in text and 'version="v1"' in text


def test_graceful_shutdown_reports_not_serving_first(node) -> None:
    running, _, health_stub = node
    with_model(running)
    running.set_serving(False)
    assert health_status(health_stub, "") == health_pb2.HealthCheckResponse.NOT_SERVING


def test_expired_deadline_is_reported_and_the_server_lives_on(node) -> None:
    running, stub, _ = node
    with_model(running)
    faces, _ = synthetic_faces(1)
    codes = []
    for _ in range(20):  # gRPC rounds a deadline to its timer's tick: a warm server can answer inside 1 us once
        try:
            stub.Classify(edge_pb2.ClassifyRequest(frame=crop_frame(faces[0])), timeout=1e-6)
        except grpc.RpcError as exc:
            codes.append(exc.code())
            break
    assert codes == [grpc.StatusCode.DEADLINE_EXCEEDED]
    assert stub.Classify(edge_pb2.ClassifyRequest(frame=crop_frame(faces[0])), timeout=5).result.status == edge_pb2.FRAME_STATUS_OK
