"""Write dashboards/edgefer-latency.json: the Grafana dashboard as code (tests/test_monitoring.py checks the
file is this script's output, so edit here and run `python monitoring/grafana/build_dashboard.py`).

Nodes are named by their registry node id (edgefer_node_info, joined on the scrape instance) and can be
picked with the `node` variable; the fleet rows come from the worker's view of the registry.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards" / "edgefer-latency.json"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
NODE = 'edgefer_node_info{node_id=~"$node"}'


def by_node(expr: str) -> str:
    """Give a per-instance series its node id (and keep only the picked nodes)."""
    return f"({expr}) * on(instance) group_left(node_id) {NODE}"


def node_sum(expr: str) -> str:
    return f"sum by (node_id) ({by_node(expr)})"


def latency_quantile(q: float, metric: str, by: str, selector: str = "") -> str:
    rate = f"rate({metric}_bucket{selector}[$__rate_interval])"
    if "node_id" in by:
        rate = by_node(rate)
    return f"histogram_quantile({q}, sum by (le, {by}) ({rate}))"


class Layout:
    """Panels placed left to right, two per row unless a panel asks for the full width."""

    def __init__(self) -> None:
        self.panels: list[dict] = []
        self._x = self._y = 0

    def add(self, title: str, targets: list[tuple[str, str]], unit: str = "short", kind: str = "timeseries",
            full: bool = False, description: str = "", table: bool = False) -> None:
        width = 24 if full else 12
        if self._x + width > 24:
            self._x, self._y = 0, self._y + 8
        panel = {
            "id": len(self.panels) + 1, "type": kind, "title": title, "datasource": DATASOURCE,
            "gridPos": {"x": self._x, "y": self._y, "w": width, "h": 8},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [
                {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend,
                 **({"instant": True, "range": False, "format": "table"} if table else {})}
                for i, (expr, legend) in enumerate(targets)
            ],
        }
        if description:
            panel["description"] = description
        if table:
            panel["transformations"] = [{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True,
                                                                                          "__name__": True}}}]
        self.panels.append(panel)
        self._x += width
        if self._x >= 24:
            self._x, self._y = 0, self._y + 8


def dashboard() -> dict:
    lay = Layout()
    lay.add("Frame latency p50 / p95 / p99 by node (the node's pipeline)",
            [(latency_quantile(q, "edgefer_request_latency_seconds", "node_id", '{stage="total"}'), f"p{int(q * 100)} {{{{node_id}}}}")
             for q in (0.5, 0.95, 0.99)], "s", full=True,
            description="Decode, detection and inference inside the node, from a frame's arrival to its result; "
                        "network and queueing in the client are not in it: see the client-observed panel.")
    lay.add("Client-observed latency p50 / p99 (device client, network included)",
            [(latency_quantile(q, "edgefer_client_latency_seconds", "instance"), f"p{int(q * 100)} {{{{instance}}}}")
             for q in (0.5, 0.99)], "s")
    lay.add("Latency p99 by node and stage",
            [(latency_quantile(0.99, "edgefer_request_latency_seconds", "node_id, stage"), "{{node_id}} {{stage}}")], "s")
    lay.add("Frames and faces per second by node",
            [(node_sum('rate(edgefer_frames_total{status="ok"}[$__rate_interval])'), "frames {{node_id}}"),
             (node_sum("rate(edgefer_faces_total[$__rate_interval])"), "faces {{node_id}}")], "ops")
    lay.add("Dropped-frame share by node (latest frame wins under overload)",
            [(node_sum('rate(edgefer_frames_total{status="dropped"}[$__rate_interval])') + " / "
              + node_sum("rate(edgefer_frames_total[$__rate_interval])"), "{{node_id}}")], "percentunit")
    errors = node_sum("rate(edgefer_errors_total[$__rate_interval])")
    attempts = node_sum('rate(edgefer_frames_total{status!="invalid"}[$__rate_interval])')  # a refused frame is an error
    lay.add("Error share by node (refused requests and frames / all)",
            [(f"{errors} / ({attempts} + {errors})", "{{node_id}}")], "percentunit")
    lay.add("Errors by gRPC code",
            [("sum by (code) (rate(edgefer_errors_total[$__rate_interval]))", "{{code}}")], "ops")
    lay.add("Desired, canary and served versions",
            [("edgefer_fleet_desired_version", "desired"), ("edgefer_fleet_canary_version > 0", "canary"),
             ("edgefer_fleet_serving_nodes", "nodes serving v{{version}}"),
             ("edgefer_worker_last_promoted_version", "worker promoted ({{fleet}})")], "short",
            description="From the registry, through the worker: what every node should serve, what the live nodes say they "
                        "serve, and the version the worker last promoted (FleetNotOnWorkersVersion fires when desired differs).")
    lay.add("Nodes by state (registry view)", [("edgefer_fleet_nodes", "{{state}}")], "short")
    lay.add("Model version per node",
            [(f"edgefer_model_info * on(instance) group_left(node_id) {NODE}", "")], "none", kind="table", table=True)
    lay.add("Model swaps and refused versions",
            [(node_sum("increase(edgefer_model_swaps_total[$__rate_interval])"), "swaps {{node_id}}"),
             ("sum by (reason) (increase(edgefer_model_sync_failures_total[$__rate_interval]))", "refused: {{reason}}")], "short")
    lay.add("Registry connection and active streams by node",
            [(by_node("edgefer_registry_connected"), "registry {{node_id}}"),
             (by_node("edgefer_active_streams"), "streams {{node_id}}")], "short")
    lay.add("Serving processes restarted (replicas)",
            [(node_sum("increase(edgefer_replica_restarts_total[$__rate_interval])"), "{{node_id}}")], "short")
    lay.add("Faces per onnxruntime call (dynamic batching)",
            [("sum by (instance) (rate(edgefer_inference_batch_faces_sum[$__rate_interval])) / "
              "sum by (instance) (rate(edgefer_inference_batch_faces_count[$__rate_interval]))", "{{instance}}")], "short")
    lay.add("Rollout: step, canary share and version",
            [("edgefer_rollout_step", "step"), ("edgefer_rollout_canary_share", "canary share %"),
             ("edgefer_rollout_canary_version", "canary version")], "short",
            description="From the rollout controller (edgefer-rollouts); 0 when no rollout is active.")
    lay.add("Rollout state and decisions",
            [("edgefer_rollout_state == 1", "{{state}}"),
             ("sum by (decision) (increase(edgefer_rollout_decisions_total[$__rate_interval]))", "{{decision}}")], "short")
    lay.add("Predicted classes by model version (canary vs stable)",
            [("sum by (version, emotion) (rate(edgefer_predictions_total[$__rate_interval])) / ignoring(emotion) "
              "group_left sum by (version) (rate(edgefer_predictions_total[$__rate_interval]) > 0)", "v{{version}} {{emotion}}")],
            "percentunit", full=True,
            description="What the rollout analysis compares: a version that calls every face one class stands out here.")
    lay.add("Mean top-1 confidence by model version",
            [("sum by (version) (rate(edgefer_prediction_confidence_sum[$__rate_interval])) / "
              "(sum by (version) (rate(edgefer_prediction_confidence_count[$__rate_interval])) > 0)", "v{{version}}")], "percentunit")
    lay.add("Frame latency p99 by model version",
            [(latency_quantile(0.99, "edgefer_version_latency_seconds", "version") + " and on (version) "
              "(sum by (version) (rate(edgefer_version_latency_seconds_count[$__rate_interval])) > 0)", "v{{version}}")], "s",
            description="Only versions that served frames in the interval: a version a node no longer serves has no line.")
    lay.add("Model time per face p50 by model version",
            [(latency_quantile(0.5, "edgefer_version_model_seconds", "version") + " and on (version) "
              "(sum by (version) (rate(edgefer_version_model_seconds_count[$__rate_interval])) > 0)", "v{{version}}")], "s",
            description="onnxruntime's own time per face, without queueing: the rollout check model_p50 compares it.")
    lay.add("Worker job progress and stage",
            [("edgefer_worker_job_progress_ratio", "progress"), ("edgefer_worker_stage == 1", "{{edgefer_worker_stage}}")],
            "percentunit")
    lay.add("Job queue", [("edgefer_worker_queue_jobs", "{{state}}")], "short")
    lay.add("Worker stage durations (p50)",
            [("histogram_quantile(0.5, sum by (le, stage) (rate(edgefer_worker_stage_seconds_bucket[1h])))", "{{stage}}")], "s")
    lay.add("Jobs ended by outcome (in the time range)",
            [("sum by (outcome) (increase(edgefer_worker_jobs_total[$__range]))", "{{outcome}}")], "short", kind="stat")
    lay.add("Last published accuracy (held-back split)", [("edgefer_worker_last_published_accuracy", "{{fleet}}")], "percentunit",
            kind="stat")
    return {
        "uid": "edgefer-latency", "title": "EdgeFER latency and fleet", "schemaVersion": 39, "version": 2,
        "editable": True, "time": {"from": "now-1h", "to": "now"}, "refresh": "10s", "tags": ["edgefer"],
        "templating": {"list": [{
            "name": "node", "label": "node", "type": "query", "datasource": DATASOURCE,
            "query": {"query": "label_values(edgefer_node_info, node_id)", "refId": "node"},
            "definition": "label_values(edgefer_node_info, node_id)", "refresh": 2, "includeAll": True, "multi": True,
            "allValue": ".*", "current": {"text": "All", "value": "$__all"}, "sort": 1,
        }]},
        "annotations": {"list": [{
            "name": "Model swaps", "datasource": DATASOURCE, "enable": True, "iconColor": "purple",
            "expr": f"changes(edgefer_model_swaps_total[1m]) * on(instance) group_left(node_id) {NODE} > 0",
            "titleFormat": "model swap", "textFormat": "{{node_id}}", "step": "1m",
        }]},
        "panels": lay.panels,
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(dashboard(), indent=2) + "\n")
