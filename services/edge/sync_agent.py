"""The node's sync agent: reconciles the served model with the fleet's desired record in Redis.

It looks on start, on every announcement, after every reconnect and on a timer; pub/sub only makes it
look sooner. A new version is verified (signature, input spec, size, sha256), loaded, self-checked
and swapped atomically, and the one before stays loaded for instant rollback. Any failure leaves the
current model serving and is reported in the node's status record and metrics; a version that failed
is not fetched again until the desired record names another one.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import redis

from edgefer.registry.manifest import Manifest, ManifestError
from edgefer.registry.signing import ManifestVerifier
from edgefer.registry.status import NodeStatus
from edgefer.registry.store import ModelRegistry
from services.edge.backoff import Backoff
from services.edge.model_cache import ModelCache
from services.edge.model_holder import LoadedModel, ModelLoadError, load_model
from services.edge.server import ServingNode

log = logging.getLogger("edgefer.edge.sync")


class VersionRefused(Exception):
    """A registry version this node will not serve; `reason` is the check that failed (a metric label)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class SyncConfig:
    node_id: str
    poll_interval_s: float = 30.0
    heartbeat_s: float = 5.0
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 10.0
    threads: int = 1  # onnxruntime threads of the sessions it loads
    max_model_bytes: int = 64 * 1024 * 1024  # a larger blob is refused before a byte of it is read


class SyncAgent:
    def __init__(
        self, registry: ModelRegistry, verifier: ManifestVerifier, node: ServingNode, cache: ModelCache, config: SyncConfig
    ) -> None:
        self.registry = registry
        self.verifier = verifier
        self.node = node
        self.cache = cache
        self.config = config
        self._backoff = Backoff(config.backoff_initial_s, config.backoff_max_s)
        self._refused: dict[int, int] = {}  # version -> revision of the desired record under which it was refused
        self._error: tuple[str, int | None] | None = None
        self._started = time.time()
        self._last_report = 0.0
        self._poke = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgefer-sync", daemon=True)

    # -- lifecycle --------------------------------------------------------------------------------

    def serve_cached(self) -> bool:
        """Serve the last verified model from disk (before Redis is reachable); False if there is none."""
        cached = self.cache.load_current(self.verifier)
        if cached is None:
            return False
        manifest, blob = cached
        try:
            self.node.swap(load_model(blob, str(manifest.version), self.config.threads))
        except ModelLoadError as exc:
            log.error("cached model not served: %s", exc)
            return False
        log.info("serving cached model version %d", manifest.version)
        return True

    def start(self) -> None:
        self._thread.start()

    def poke(self) -> None:
        """Reconcile now (SIGHUP)."""
        self._poke.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._session()
            except (redis.RedisError, OSError) as exc:
                self.node.metrics.registry_connected.set(0)
                delay = self._backoff.next_delay()
                log.warning("registry unreachable (%s); retrying in %.1fs, still serving", exc, delay)
                self._stop.wait(delay)
            except Exception as exc:  # noqa: BLE001 - a bad record or a bug must not end the node's sync for good
                self.node.metrics.sync_failures.labels("error").inc()
                self._error = (f"sync failed: {exc}", None)
                delay = self._backoff.next_delay()
                log.exception("sync failed; retrying in %.1fs, still serving", delay)
                self._stop.wait(delay)

    def _session(self) -> None:
        pubsub = self.registry.client.pubsub()
        try:
            pubsub.subscribe(self.registry.keys.channel)
            next_poll = 0.0
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=0.5)
                now = time.monotonic()
                if message and message["type"] == "subscribe":  # (re)connected: catch up on what we missed
                    self.node.metrics.registry_connected.set(1)
                    self._backoff.reset()
                    next_poll = 0.0
                if (message and message["type"] == "message") or self._poke.is_set() or now >= next_poll:
                    self._poke.clear()
                    self.reconcile()
                    next_poll = now + self.config.poll_interval_s
                elif time.time() - self._last_report >= self.config.heartbeat_s:
                    self._report()
        finally:
            pubsub.close()

    # -- reconciling ------------------------------------------------------------------------------

    def reconcile(self) -> None:
        desired = self.registry.desired()
        if desired is not None:
            self._converge(desired.target_for(self.config.node_id), desired.revision)
        self._report()

    def _converge(self, target: int, revision: int) -> None:
        """Serve `target`. A refusal is remembered for the desired record's revision only: any new write of
        the record (promote again after repairing a blob) retries it, and a version not in the registry yet
        ("missing") is looked for again at every reconcile."""
        current, previous = self.node.holder.current(), self.node.holder.previous()
        if current is not None and current.version == str(target):
            self._error = None
            return
        if self._refused.get(target) == revision:
            return
        if previous is not None and previous.version == str(target):
            self.node.rollback()
            self.cache.select(target)
            self._error = None
            log.info("rolled back to version %d (kept loaded)", target)
            return
        started = time.perf_counter()
        try:
            manifest, blob, model = self._fetch_verified(target)
        except VersionRefused as exc:
            if exc.reason != "missing":
                self._refused[target] = revision
            self._error = (str(exc), target)
            self.node.metrics.sync_failures.labels(exc.reason).inc()
            log.error("version %d refused, still serving %s: %s", target, current.version if current else "nothing", exc)
            return
        self.cache.store(manifest, blob)
        self.node.swap(model)
        self._error = None
        self.node.metrics.sync_seconds.observe(time.perf_counter() - started)
        log.info("serving version %d (sha256 %s)", target, manifest.sha256[:12])

    def _fetch_verified(self, target: int) -> tuple[Manifest, bytes, LoadedModel]:
        """The manifest first (signature, identity, input, size), the blob's length next, its bytes last: a
        manifest stored under another version's key, or a blob of another size, is refused before download."""
        stage = "missing"
        try:
            manifest = self.registry.manifest(target)
            if manifest is None:
                raise ManifestError(f"version {target} is not in the registry")
            stage = "signature"
            self.verifier.verify(manifest)
            stage = "identity"
            if manifest.version != target:
                raise ManifestError(f"the manifest stored as version {target} is signed for version {manifest.version}")
            stage = "input"
            manifest.check_input()
            stage = "integrity"
            if manifest.size > self.config.max_model_bytes:
                raise ManifestError(f"version {target}: {manifest.size:,} bytes exceed the node's limit of "
                                    f"{self.config.max_model_bytes:,}")
            stored = self.registry.blob_size(target)
            if stored != manifest.size:
                raise ManifestError(f"version {target}: stored blob is {stored:,} bytes, the manifest says {manifest.size:,}")
            blob = self.registry.blob(target) or b""
            manifest.check_blob(blob)
            stage = "load"
            return manifest, blob, load_model(blob, str(target), self.config.threads)
        except (ManifestError, ModelLoadError) as exc:
            raise VersionRefused(stage, str(exc)) from exc

    def _report(self) -> None:
        current = self.node.holder.current()
        error, error_version = self._error or ("", None)
        status = NodeStatus(
            node_id=self.config.node_id,
            version=current.version if current else None,
            sha256=current.sha256 if current else "",
            last_error=error,
            error_version=error_version,
            heartbeat=time.time(),
            started=self._started,
        )
        self.registry.write_status(status, ttl_s=3 * self.config.heartbeat_s)
        self._last_report = status.heartbeat
