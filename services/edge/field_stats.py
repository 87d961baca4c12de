"""A node's field statistics as plain numbers for its status record: per model version, the predicted classes,
the top-1 confidence, frame latency and model time histograms and faces per frame; and the node's traffic outcomes.

Cumulative since the node started (its `started` time says when); a rollout controller takes differences
over its bake window (edgefer/rollouts/analysis.py). Read from the node's Prometheus registry, so a node of
several serving processes reports the sum over them, as its /metrics does.
"""

from __future__ import annotations

from collections import defaultdict

from prometheus_client import CollectorRegistry

from edgefer.labels import CLASSES
from services.edge.metrics import FIELD_FAMILIES

HISTOGRAMS = {"edgefer_prediction_confidence": "confidence", "edgefer_version_latency_seconds": "latency",
              "edgefer_version_model_seconds": "model"}


def field_summary(registry: CollectorRegistry) -> tuple[dict, dict]:
    """(per-version field statistics, node traffic) from a node's registry."""
    versions: dict[str, dict] = defaultdict(
        lambda: {"classes": [0] * len(CLASSES), "confidence": {}, "latency": {}, "model": {}})
    traffic = {"ok": 0, "invalid": 0, "dropped": 0, "errors": 0}
    for family in registry.collect():
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if family.name in FIELD_FAMILIES:
                _add_field(versions[labels["version"]], family.name, name, labels, value)
            elif name == "edgefer_frames_total" and labels.get("status") in ("ok", "invalid"):
                traffic[labels["status"]] += int(value)
            elif name == "edgefer_dropped_frames_total":
                traffic["dropped"] += int(value)
            elif name == "edgefer_errors_total":
                traffic["errors"] += int(value)
    return dict(versions), traffic


def _add_field(stats: dict, family: str, name: str, labels: dict, value: float) -> None:
    if family == "edgefer_predictions" and name.endswith("_total"):
        stats["classes"][CLASSES.index(labels["emotion"])] += int(value)
    elif family == "edgefer_frame_faces":
        if name.endswith("_count"):
            stats["frames"] = int(value)
        elif name.endswith("_sum"):
            stats["faces"] = int(value)
    elif family in HISTOGRAMS:
        histogram = stats[HISTOGRAMS[family]]
        if name.endswith("_bucket"):
            histogram.setdefault("buckets", {})[labels["le"]] = int(value)
        elif name.endswith("_sum"):
            histogram["sum"] = value
