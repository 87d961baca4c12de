"""`edgefer-rollouts`: the long-running rollout controller of one fleet, with Prometheus metrics.

Started rollouts (`edgefer-registry rollout start`, or a worker job's `rollout` setting) are moved on every
`tick_s`; the state lives in Redis, so a restarted controller resumes where the last one was.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import redis
from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_client.core import GaugeMetricFamily

from edgefer.env_settings import EnvSettings
from edgefer.registry.connection import RegistryAccess, connect, connect_for_scrapes, describe_redis_error
from edgefer.registry.store import ModelRegistry
from edgefer.rollouts.controller import RolloutController
from edgefer.rollouts.store import ACTIVE, FINAL, RolloutError, RolloutStore

log = logging.getLogger("edgefer.rollouts")
DECISIONS = ("step", "advance", "inconclusive", "hold", "resume", "pause", "promoted", "rolled_back", "aborted")


@dataclass(frozen=True)
class RolloutSettings(RegistryAccess, EnvSettings):
    tick_s: float = 1.0  # how often the rollout is looked at
    stale_after_s: float = 15.0  # a node whose heartbeat is older holds the rollout
    metrics_port: int = 9300  # Prometheus /metrics port (0: no endpoint)


class RolloutCollector:
    """The fleet's rollout as gauges, read from Redis at every scrape."""

    def __init__(self, store: RolloutStore) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = GaugeMetricFamily("edgefer_rollout_state", "1 for the rollout's state", labels=["state"])
        step = GaugeMetricFamily("edgefer_rollout_step", "The rollout's step (1-based; 0: none)")
        share = GaugeMetricFamily("edgefer_rollout_canary_share", "Canary share of the live nodes, percent")
        version = GaugeMetricFamily("edgefer_rollout_canary_version", "The version being rolled out (0: none)")
        up = GaugeMetricFamily("edgefer_rollout_registry_up", "1 when the controller could read its rollout record")
        try:
            record = self.store.get()
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        for name in (*ACTIVE, *FINAL):
            state.add_metric([name], 1 if record is not None and record.state == name else 0)
        active = record is not None and record.active
        step.add_metric([], record.step + 1 if active else 0)
        share.add_metric([], record.share() if active else 0)
        version.add_metric([], record.version if active else 0)
        yield from (state, step, share, version)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        settings = RolloutSettings.from_args(argv, "edgefer-rollouts", __doc__.splitlines()[0])
        registry = ModelRegistry(connect(settings), settings.fleet)
    except (ValueError, OSError) as exc:
        print(f"edgefer-rollouts: error: {exc}", file=sys.stderr)
        return 2
    metrics = CollectorRegistry()
    decisions = Counter("edgefer_rollout_decisions", "Rollout decisions taken, by kind", ["decision"], registry=metrics)
    for name in DECISIONS:
        decisions.labels(name)
    controller = RolloutController(registry, settings.stale_after_s, lambda d: decisions.labels(d).inc())
    scrapes = connect_for_scrapes(settings)
    metrics.register(RolloutCollector(RolloutStore(scrapes, registry.keys)))
    if settings.metrics_port:
        start_http_server(settings.metrics_port, registry=metrics)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("controlling rollouts of fleet %s every %.1fs", settings.fleet, settings.tick_s)
    problem = ""  # the failure last logged: each is logged when it starts, not at every tick
    while not stop.wait(settings.tick_s):
        try:
            controller.tick()
            problem = ""
        except redis.RedisError as exc:
            problem = _log_once(problem, f"registry unreachable ({describe_redis_error(exc)}); retrying")
        except RolloutError as exc:  # an unreadable record: the operator replaces it (`rollout abort --force`)
            problem = _log_once(problem, f"rollout record not followed: {exc}")
        except Exception as exc:  # a bug must not stop the controller: the rollout stays where it is, visible in status
            problem = _log_once(problem, f"rollout tick failed: {exc}", traceback=True)
    return 0


def _log_once(last: str, problem: str, traceback: bool = False) -> str:
    """Log `problem` unless it is the one logged last; returns it as the new last."""
    if problem != last:
        log.warning("%s", problem, exc_info=traceback)
    return problem


if __name__ == "__main__":
    sys.exit(main())
