"""One /metrics for a node of several serving processes: the main process's metrics plus its replicas' traffic.

Each replica sends a snapshot of its traffic families (plain tuples, picklable) every second; the main
process's endpoint adds them to its own samples. The counts of a replica that died are kept (gauges
excepted), so that a node's counters never go down when a replica is started again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from services.edge.metrics import TRAFFIC_FAMILIES

Sample = tuple[str, dict[str, str], float]
Family = tuple[str, str, list[Sample]]  # name, type, samples
Snapshot = list[Family]


def snapshot(registry: CollectorRegistry) -> Snapshot:
    """A process's traffic families as plain data."""
    return [
        (family.name, family.type, [(s.name, dict(s.labels), s.value) for s in family.samples])
        for family in registry.collect()
        if family.name in TRAFFIC_FAMILIES
    ]


def without_gauges(snap: Snapshot) -> Snapshot:
    """What of a dead replica still counts: its counters and histograms, not its open streams."""
    return [family for family in snap if family[1] != "gauge"]


def _key(name: str, labels: dict[str, str]) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


class NodeCollector:
    """Collects the main process's registry with every replica snapshot's samples added in
    (`_created` timestamps are the main process's)."""

    def __init__(self, local: CollectorRegistry, snapshots: Callable[[], list[Snapshot]]) -> None:
        self._local = local
        self._snapshots = snapshots

    def collect(self) -> Iterator[Metric]:
        added: dict[str, dict[tuple, float]] = defaultdict(lambda: defaultdict(float))
        for snap in self._snapshots():
            for family, _, samples in snap:
                for name, labels, value in samples:
                    if not name.endswith("_created"):
                        added[family][_key(name, labels)] += value
        for family in self._local.collect():
            extra = added.pop(family.name, {})
            merged = Metric(family.name, family.documentation, family.type, family.unit)
            for s in family.samples:
                merged.add_sample(s.name, s.labels, s.value + extra.pop(_key(s.name, s.labels), 0.0), s.timestamp, s.exemplar)
            for (name, labels), value in extra.items():  # label values only a replica has seen (an error code, say)
                merged.add_sample(name, dict(labels), value)
            yield merged


def node_registry(local: CollectorRegistry, snapshots: Callable[[], list[Snapshot]]) -> CollectorRegistry:
    """The registry a multi-process node's metrics endpoint serves."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(local, snapshots))
    return registry
