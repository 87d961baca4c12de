"""The fleet as the registry sees it, exported by the central worker at scrape time.

Nodes' own metrics vanish with the node (a deleted pod leaves no series at all); the registry still
knows every node that ever heartbeated, what each should serve and what it says it serves. So the
alerts "a node went silent" and "nodes are not serving their target" and the dashboard's "desired vs
served" come from here, the same rows `edgefer-registry status` prints, whatever scrape discovery
(static, annotations, PodMonitor) a deployment uses.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from edgefer.jobs.queue import JobQueue
from edgefer.registry.store import ModelRegistry

NODE_STATES = ("ok", "syncing", "mismatch", "stale", "unreadable")


class FleetCollector(Collector):
    def __init__(self, registry: ModelRegistry, queue: JobQueue, stale_after_s: float = 15.0) -> None:
        self.registry = registry
        self.queue = queue
        self.stale_after_s = stale_after_s

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up, nodes, serving, desired, canary, canary_percent, queue = families = _families()
        try:
            record, _ = self.registry.desired_or_problem()
            rows = self.registry.fleet_view(record, self.stale_after_s)
            waiting, running = self.queue.depth()
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        states = Counter(r.state for r in rows)
        for state in NODE_STATES:
            nodes.add_metric([state], states.get(state, 0))
        versions = Counter(r.status.version for r in rows if not r.stale and r.status and r.status.version)
        for version, count in sorted(versions.items()):
            serving.add_metric([version], count)
        if record is not None:
            desired.add_metric([], record.version)
            canary.add_metric([], record.canary.version if record.canary else 0)
            canary_percent.add_metric([], record.canary.percent if record.canary else 0)
        queue.add_metric(["waiting"], waiting)
        queue.add_metric(["running"], running)
        yield from families

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The families without reading Redis (registration must not depend on it)."""
        yield from _families()


def _families() -> tuple[GaugeMetricFamily, ...]:
    """The exported families, empty: collect() fills them, describe() names them."""
    return (
        GaugeMetricFamily("edgefer_fleet_registry_up", "1 when the worker could read the fleet from the registry"),
        GaugeMetricFamily("edgefer_fleet_nodes", "Nodes ever seen, by state (as `edgefer-registry status`)", labels=["state"]),
        GaugeMetricFamily("edgefer_fleet_serving_nodes", "Live nodes by the version they serve", labels=["version"]),
        GaugeMetricFamily("edgefer_fleet_desired_version", "The version every node should serve"),
        GaugeMetricFamily("edgefer_fleet_canary_version", "The canary version (0: no canary)"),
        GaugeMetricFamily("edgefer_fleet_canary_percent", "The canary's share of nodes"),
        GaugeMetricFamily("edgefer_worker_queue_jobs", "Jobs submitted and not yet acknowledged", labels=["state"]),
    )
