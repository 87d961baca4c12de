"""A node of two serving processes on one port (settings.workers = 2), for real: both processes answer,
a swap or a rollback has reached both when it returns, /metrics counts the frames of both, and a killed
replica comes back serving the current model without the node's counters going down."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from edgefer.localfleet.ports import free_port
from edgefer.v1 import edge_pb2, edge_pb2_grpc
from services.edge.main import start_node
from services.edge.metrics import EdgeMetrics
from services.edge.model_holder import load_onnx_file
from services.edge.replica_metrics import node_registry, snapshot
from services.edge.settings import EdgeSettings
from tests.conftest import synthetic_faces

MODEL = Path(__file__).resolve().parent.parent / "models" / "ean-pruned.onnx"
CONNECTIONS = 16  # the kernel spreads connections over the two processes: all 16 on one has odds 2 in 65,536


@pytest.fixture
def node():
    settings = EdgeSettings(host="127.0.0.1", port=0, metrics_port=free_port(), intra_op_threads=2, workers=2,
                            replica_report_seconds=0.1)
    metrics = EdgeMetrics()
    running, _ = start_node(settings, metrics)
    running.swap(load_onnx_file(MODEL, threads=1, version="v1"))
    yield running, metrics, settings
    running.stop(0)


def classify_on_fresh_connections(port: int, frames_each: int = 2) -> list[str]:
    """The model version of every answer, over CONNECTIONS connections of their own."""
    faces, _ = synthetic_faces(frames_each)
    versions = []
    for _ in range(CONNECTIONS):
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            stub = edge_pb2_grpc.EdgeFerStub(channel)
            for face in faces:
                raw = edge_pb2.RawImage(width=48, height=48, format=edge_pb2.PIXEL_FORMAT_GRAY, pixels=face.tobytes())
                reply = stub.Classify(edge_pb2.ClassifyRequest(frame=edge_pb2.Frame(raw=raw, is_face_crop=True)), timeout=30)
                versions.append(reply.result.model_version)
    return versions


def scraped_ok_frames(settings: EdgeSettings) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{settings.metrics_port}/metrics", timeout=10).read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "edgefer_frames_total" and sample.labels == {"status": "ok"}:
                return sample.value
    return 0.0


def wait_for(condition, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def test_both_processes_serve_and_metrics_count_every_frame(node) -> None:
    running, metrics, settings = node
    versions = classify_on_fresh_connections(running.port)
    assert versions == ["v1"] * 2 * CONNECTIONS
    own = metrics.registry.get_sample_value("edgefer_frames_total", {"status": "ok"})
    assert 0 < own < 2 * CONNECTIONS, "one process answered every connection"
    wait_for(lambda: scraped_ok_frames(settings) == 2 * CONNECTIONS)


def test_a_swap_and_a_rollback_have_reached_every_process_when_they_return(node) -> None:
    running, _, _ = node
    running.swap(load_onnx_file(MODEL, threads=1, version="v2"))
    assert set(classify_on_fresh_connections(running.port)) == {"v2"}
    running.rollback()
    assert set(classify_on_fresh_connections(running.port)) == {"v1"}


def test_a_killed_replica_comes_back_with_the_current_model(node) -> None:
    running, _, settings = node
    running.swap(load_onnx_file(MODEL, threads=1, version="v2"))
    classify_on_fresh_connections(running.port)
    wait_for(lambda: scraped_ok_frames(settings) == 2 * CONNECTIONS)
    (old_pid,) = running.replicas.pids
    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: running.replicas.pids != [old_pid] and running.replicas.ready)
    assert set(classify_on_fresh_connections(running.port)) == {"v2"}
    wait_for(lambda: scraped_ok_frames(settings) == 4 * CONNECTIONS)  # the dead replica's frames still count
    assert running.metrics.registry.get_sample_value("edgefer_replica_restarts_total") == 1


def test_a_replica_started_again_after_a_swap_reports_serving_on_every_check(node) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    running, _, _ = node  # the fixture's swap made the node SERVING; no set_serving call was ever made
    (old_pid,) = running.replicas.pids
    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: running.replicas.pids != [old_pid] and running.replicas.ready)
    statuses = []
    for _ in range(24):  # fresh connections: the kernel spreads them over both processes
        with grpc.insecure_channel(f"127.0.0.1:{running.port}", options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            statuses.append(health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status)
    assert statuses == [health_pb2.HealthCheckResponse.SERVING] * 24


def test_node_metrics_add_replica_traffic_and_keep_the_main_process_model_state() -> None:
    main, replica = EdgeMetrics(), EdgeMetrics()
    main.frames_ok.inc(3)
    replica.frames_ok.inc(4)
    replica.errors.labels("INVALID_ARGUMENT").inc()  # a label only the replica has seen
    main.swaps.inc()
    replica.swaps.inc()  # a replica's own swaps are the node's same swap: not added
    exposed = node_registry(main.registry, lambda: [snapshot(replica.registry)])
    assert exposed.get_sample_value("edgefer_frames_total", {"status": "ok"}) == 7
    assert exposed.get_sample_value("edgefer_errors_total", {"code": "INVALID_ARGUMENT"}) == 1
    assert exposed.get_sample_value("edgefer_model_swaps_total") == 1
    names = [family.name for family in exposed.collect()]
    assert len(names) == len(set(names))


def test_snapshots_are_only_traffic() -> None:
    registry = CollectorRegistry()
    Counter("something_else", "not a node metric", registry=registry).inc()
    assert snapshot(registry) == []
