"""`edgefer-edge`: run an edge node. SIGHUP reloads the model file (atomic swap); SIGTERM drains and exits."""

from __future__ import annotations

import logging
import signal
import sys
import threading

from prometheus_client import start_http_server

from services.edge.metrics import EdgeMetrics
from services.edge.model_holder import ModelLoadError, load_model_file
from services.edge.server import RunningServer, start_server
from services.edge.settings import EdgeSettings

log = logging.getLogger("edgefer.edge")


def reload_model(node: RunningServer, settings: EdgeSettings) -> None:
    """Load, self-check and swap; a bad file leaves the current model serving."""
    try:
        model = load_model_file(settings.model_path, settings.intra_op_threads, settings.model_version or None)
    except ModelLoadError as exc:
        log.error("model not swapped: %s", exc)
        return
    node.swap(model)
    log.info("serving model %s (sha256 %s)", model.version, model.sha256[:12])


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        settings = EdgeSettings.from_args(argv)
    except ValueError as exc:
        print(f"edgefer-edge: error: {exc}", file=sys.stderr)
        return 2
    metrics = EdgeMetrics()
    if settings.metrics_port:
        start_http_server(settings.metrics_port, registry=metrics.registry)
    node = start_server(settings, metrics)
    log.info("listening on %s:%d (metrics on :%d)", settings.host, node.port, settings.metrics_port)
    reload_model(node, settings)
    stop = threading.Event()
    signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=reload_model, args=(node, settings)).start())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    log.info("shutting down: NOT_SERVING, draining for up to %.0fs", settings.grace_seconds)
    node.stop(settings.grace_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
