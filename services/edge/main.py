"""`edgefer-edge`: run an edge node.

Without a registry it serves --model-path and SIGHUP reloads that file; with --redis-url it serves the
last verified model from its cache at once and then follows the fleet's desired record (SIGHUP makes
it look now). Either way a swap is atomic and SIGTERM drains and exits. With --workers N it runs N-1 more serving
processes on the same port (services/edge/replicas.py), kept in step with this one.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

from prometheus_client import CollectorRegistry, start_http_server

from edgefer.registry.connection import connect, connect_reader
from edgefer.registry.signing import TrustedKey
from edgefer.registry.store import ModelRegistry
from services.edge.field_stats import field_summary
from services.edge.metrics import EdgeMetrics
from services.edge.model_cache import ModelCache
from services.edge.model_holder import ModelLoadError, load_onnx_file
from services.edge.replica_metrics import node_registry
from services.edge.replicas import ReplicaSet, ReplicatedNode
from services.edge.server import ServingNode, start_server
from services.edge.settings import EdgeSettings
from services.edge.sync_agent import SyncAgent, SyncConfig

log = logging.getLogger("edgefer.edge")


def reload_model(node: ServingNode, settings: EdgeSettings) -> None:
    """Load, self-check and swap; a bad file leaves the current model serving."""
    try:
        model = load_onnx_file(settings.model_path, settings.session_threads, settings.model_version or None)
    except ModelLoadError as exc:
        log.error("model not swapped: %s", exc)
        return
    node.swap(model)
    log.info("serving model %s (sha256 %s)", model.version, model.sha256[:12])


def start_sync_agent(node: ServingNode, settings: EdgeSettings, exposed: CollectorRegistry) -> SyncAgent:
    """Serve the cached model (or the bootstrap file) now, then follow the registry in the background."""
    if settings.registry_public_key is None:
        raise ValueError("setting registry_public_key is required with redis_url: nodes serve signed models only")
    agent = SyncAgent(
        ModelRegistry(connect(settings), settings.fleet, connect_reader(settings, settings.redis_read_url)),
        TrustedKey(settings.registry_public_key),
        node,
        ModelCache(settings.model_cache_dir),
        SyncConfig(settings.node_id, settings.sync_poll_seconds, settings.heartbeat_seconds, threads=settings.session_threads,
                   max_model_bytes=settings.max_model_bytes),
        field_stats=lambda: field_summary(exposed),
    )
    if not agent.serve_cached() and settings.model_path.exists():
        reload_model(node, settings)  # a first boot with no cache: serve the image's model until the registry answers
    agent.start()
    return agent


def start_node(settings: EdgeSettings, metrics: EdgeMetrics) -> tuple[ServingNode, CollectorRegistry]:
    """This process's server, the replicas when settings.workers > 1, and the metrics endpoint over all; returns
    the node and the registry that endpoint serves (what the node's status record summarises too)."""
    local = start_server(settings, metrics)
    if settings.workers <= 1:
        node: ServingNode = local
        exposed = metrics.registry
    else:
        replicas = ReplicaSet(settings.for_replica(local.port), settings.workers - 1, local.holder, lambda: local.serving,
                              metrics)
        node = ReplicatedNode(local, replicas)
        exposed = node_registry(metrics.registry, replicas.snapshots)
    if settings.metrics_port:
        try:
            start_http_server(settings.metrics_port, registry=exposed)
        except OSError:
            node.stop(0)
            raise
    return node, exposed


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        settings = EdgeSettings.from_args(argv, "edgefer-edge", "EdgeFER edge inference node")
    except ValueError as exc:
        print(f"edgefer-edge: error: {exc}", file=sys.stderr)
        return 2
    metrics = EdgeMetrics()
    metrics.node.info({"node_id": settings.node_id, "fleet": settings.fleet})
    # Signals from the start: a SIGTERM while the node comes up (spawning replicas, a first load) still drains and
    # exits cleanly, and a SIGHUP before there is anything to reload is moot instead of the default action, which
    # ends the process at once.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        node, exposed = start_node(settings, metrics)
        agent = start_sync_agent(node, settings, exposed) if settings.redis_url else None
    except (ValueError, OSError) as exc:
        print(f"edgefer-edge: error: {exc}", file=sys.stderr)
        return 2
    log.info("listening on %s:%d (metrics on :%d)", settings.host, node.port, settings.metrics_port)
    if agent is None:
        signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=reload_model, args=(node, settings)).start())
        reload_model(node, settings)
    else:
        signal.signal(signal.SIGHUP, lambda *_: agent.poke())
    stop.wait()
    log.info("shutting down: NOT_SERVING, draining for up to %.0fs", settings.grace_seconds)
    if agent is not None:
        agent.stop()
    node.stop(settings.grace_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
