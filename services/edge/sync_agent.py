"""The node's sync agent: reconciles the served model with the fleet's desired record in Redis.

It looks on start, on every announcement, after every reconnect and on a timer; pub/sub only makes it
look sooner. A version is what its signed manifest says (fleet, registry epoch, version, sha256), so
"already serving" and "roll back to the model kept loaded" are decided by sha256, never by the number
alone. A new version is verified (signature, identity, input spec, size, sha256), loaded, self-checked
and swapped atomically. Any failure leaves the current model serving and is reported in the node's
status record and metrics, by cause: the registry unreachable, a version refused (the check that failed),
the desired record unreadable ("record"), or the node's own disk ("disk": a verified model is served from
memory when its cache cannot be written). A refused manifest is not tried again until it or the desired record
changes. Every retry waits on the one jittered backoff, and each cause is logged once when it starts.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import redis

from edgefer.backoff import Backoff
from edgefer.registry.connection import describe_redis_error
from edgefer.registry.desired import DesiredRecordError
from edgefer.registry.manifest import Manifest, ManifestError
from edgefer.registry.signing import KeyFileError, TrustedKey
from edgefer.registry.status import NodeStatus, announce_spread, heartbeat_interval
from edgefer.registry.store import ModelRegistry
from edgefer.registry.version import version_label
from services.edge.model_cache import ModelCache
from services.edge.model_holder import LoadedModel, ModelLoadError, load_onnx_model
from services.edge.server import ServingNode

log = logging.getLogger("edgefer.edge.sync")


RECONNECTS_PER_S = 100.0  # the pace at which a whole fleet comes back to a restarted Redis (see _reconnect_cap)
# Bytes, version label, onnxruntime threads -> a loaded, self-checked model (the fleet simulator verifies only).
ModelLoader = Callable[[bytes, str, int], LoadedModel]
# Refusals that may clear by themselves (a version not written yet, a key file being restored): tried at every reconcile.
TRANSIENT_REASONS = frozenset({"missing", "key"})


@dataclass(frozen=True)
class SyncFault:
    """What the node's status record reports as its last error: the message, the version it was about, and its
    cause (a sync_failures reason: the refusing check, "record", "error"), which decides how the node reacts."""

    message: str
    version: int | None
    reason: str


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
    backoff_max_s: float = 10.0  # stretched with the fleet: see reconnect_cap
    threads: int = 1  # onnxruntime threads of the sessions it loads
    max_model_bytes: int = 64 * 1024 * 1024  # a larger blob is refused before a byte of it is read
    announce_spread_per_1000_s: float = 1.0  # after an announcement, fetches spread over 1 s per 1,000 nodes ...
    max_announce_spread_s: float = 10.0  # ... and at most this long


class SyncAgent:
    def __init__(
        self,
        registry: ModelRegistry,
        trusted: TrustedKey,
        node: ServingNode,
        cache: ModelCache,
        config: SyncConfig,
        loader: ModelLoader = load_onnx_model,
        field_stats: Callable[[], tuple[dict, dict]] | None = None,
    ) -> None:
        """`field_stats` gives the node's per-version field statistics and traffic for its status record
        (services/edge/field_stats.py), what a rollout controller compares."""
        self.registry = registry
        self.field_stats = field_stats
        self.loader = loader
        self.trusted = trusted
        self.node = node
        self.cache = cache
        self.config = config
        self._backoff = Backoff(config.backoff_initial_s, config.backoff_max_s)
        self._refused: dict[int, tuple[str, int]] = {}  # version -> (sha256 of the refused manifest, desired revision)
        self._served: dict[str, Manifest] = {}  # sha256 -> manifest of the models held (current and previous)
        self._error: SyncFault | None = None
        self._local_error = ""  # the node's own fault (its cache cannot be written): no version is refused for it
        self._logged_cause = ""  # the failure cause last logged: a cause is logged when it starts, not at every try
        self._started = time.time()
        self._last_report = 0.0
        self._fleet_size = 1  # as the last status write saw it: heartbeats and fetches spread with it
        self._rng = random.Random()
        self._poke = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgefer-sync", daemon=True)

    # -- lifecycle --------------------------------------------------------------------------------

    def serve_cached(self) -> bool:
        """Serve the last verified model from disk (before Redis is reachable); False if there is none."""
        verifier = self.trusted.verifier_or_none()
        if verifier is None:
            log.error("public key %s unreadable: the cached model is checked against its cached manifest only",
                      self.trusted.path)
        cached = self.cache.load_current(verifier)
        if cached is None:
            return False
        manifest, blob = cached
        try:
            model = self.loader(blob, version_label(manifest.version), self.config.threads)
            self.node.swap(replace(model, epoch=manifest.epoch))
        except ModelLoadError as exc:
            log.error("cached model not served: %s", exc)
            return False
        self._remember(manifest)
        log.info("serving cached model version %d (sha256 %s)", manifest.version, manifest.sha256[:12])
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
            except redis.ResponseError as exc:  # reachable, but it refused (maxmemory, a read-only replica, ACL)
                delay = self._backoff.next_delay()
                self._log_cause(f"refused {exc}", f"registry refused a command ({describe_redis_error(exc)}); "
                                                  "retrying, still serving")
                self._stop.wait(delay)
            except (redis.RedisError, OSError) as exc:
                self.node.metrics.registry_connected.set(0)
                self._backoff.cap_s = self._reconnect_cap()
                delay = self._backoff.next_delay()
                cause = describe_redis_error(exc) if isinstance(exc, redis.RedisError) else str(exc)
                self._log_cause("registry unreachable", f"registry unreachable ({cause}); retrying, still serving")
                self._stop.wait(delay)
            except Exception as exc:  # noqa: BLE001 - a bug must not end the node's sync for good
                self.node.metrics.sync_failures.labels("error").inc()
                self._error = SyncFault(f"sync failed: {exc}", None, "error")
                delay = self._backoff.next_delay()
                if self._log_cause(f"error {exc}", f"sync failed ({exc}); retrying, still serving"):
                    log.exception("the failure")
                self._stop.wait(delay)

    def _log_cause(self, cause: str, message: str) -> bool:
        """Log a failure when its cause changes (a retry of the same cause stays quiet); True when logged."""
        if cause == self._logged_cause:
            return False
        self._logged_cause = cause
        log.warning(message)
        return True

    def _session(self) -> None:
        pubsub = self.registry.reader.pubsub()
        try:
            pubsub.subscribe(self.registry.keys.channel)
            next_poll = 0.0
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=min(0.5, max(0.0, next_poll - time.monotonic())))
                now = time.monotonic()
                if self._waiting_for_key() and self.trusted.changed():  # restored: look now, not at the next poll
                    self._poke.set()
                if message and message["type"] == "subscribe":  # (re)connected: catch up on what we missed
                    self.node.metrics.registry_connected.set(1)
                    next_poll = 0.0
                elif message and message["type"] == "message":  # look soon, at a moment of this node's own
                    next_poll = min(next_poll, now + self._rng.uniform(0, self._announce_spread()))
                if self._poke.is_set() or now >= next_poll:
                    self._poke.clear()
                    self.reconcile()
                    self._backoff.reset()  # only a whole reconcile ends a run of failures, not a mere reconnect
                    self._logged_cause = ""
                    next_poll = now + self.config.poll_interval_s
                elif time.time() - self._last_report >= heartbeat_interval(self.config.heartbeat_s, self._fleet_size):
                    self._report()
        finally:
            pubsub.close()

    def _waiting_for_key(self) -> bool:
        return self._error is not None and self._error.reason == "key"

    def _reconnect_cap(self) -> float:
        """A larger fleet waits longer between tries, so a restarted Redis sees at most about
        RECONNECTS_PER_S nodes coming back a second (10 s up to 1,000 nodes)."""
        return max(self.config.backoff_max_s, self._fleet_size / RECONNECTS_PER_S)

    def _announce_spread(self) -> float:
        return announce_spread(self._fleet_size, self.config.announce_spread_per_1000_s, self.config.max_announce_spread_s)

    # -- reconciling ------------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Converge on the desired record and report. An unreadable desired record is reported (status record,
        reason "record") and looked at again at the next poll or announcement; the node serves on."""
        try:
            desired, epoch = self.registry.desired_state()
        except DesiredRecordError as exc:
            if self._error is None or self._error.reason != "record":
                self.node.metrics.sync_failures.labels("record").inc()
                log.error("desired record unreadable, still serving: %s", exc)
            self._error = SyncFault(f"desired record unreadable: {exc}", None, "record")
        else:
            if self._error is not None and self._error.reason == "record":
                self._error = None
            if desired is not None:
                self._converge(desired.target_for(self.config.node_id), desired.revision, epoch)
        if self._local_error:
            self._repair_cache()
        self._report()

    def _converge(self, target: int, revision: int, epoch: str) -> None:
        """Serve `target`. A refusal is remembered for that manifest under that desired revision only: a
        rewritten manifest or record (promote again after repairing a blob) is tried again, and a version
        not in the registry yet ("missing") is looked for at every reconcile."""
        raw = self.registry.raw_manifest(target)
        fingerprint = hashlib.sha256(raw).hexdigest() if raw is not None else ""
        if raw is not None and self._refused.get(target) == (fingerprint, revision):
            return
        started = time.perf_counter()
        try:
            manifest = self._verified_manifest(target, raw, epoch)
            if self._serve_held(manifest):
                return
            blob, model = self._fetch_verified(manifest)
        except VersionRefused as exc:
            if exc.reason not in TRANSIENT_REASONS:
                self._refused[target] = (fingerprint, revision)
            self._error = SyncFault(str(exc), target, exc.reason)
            self.node.metrics.sync_failures.labels(exc.reason).inc()
            current = self.node.holder.current()
            log.error("version %d refused, still serving %s: %s", target, current.version if current else "nothing", exc)
            return
        self._keep_in_cache(manifest, blob)
        self.node.swap(replace(model, epoch=manifest.epoch))
        self._remember(manifest)
        self._error = None
        self.node.metrics.sync_seconds.observe(time.perf_counter() - started)
        log.info("serving version %d (sha256 %s)", target, manifest.sha256[:12])

    def _keep_in_cache(self, manifest: Manifest, blob: bytes | None = None) -> None:
        """Make `manifest`'s model the one the next start serves: select it when its bytes are cached, else
        store them (fetched again and checked against the manifest when not given). A disk that refuses (full,
        read-only, a file size limit) is the node's own fault, not the version's: the verified model is served
        from memory all the same, and the fault is reported once (reason "disk") until a write succeeds."""
        try:
            if blob is not None or not self.cache.select(manifest):
                blob = blob if blob is not None else self._fetch_again(manifest)
                if blob is None:
                    return  # the registry did not give the bytes back: tried again at the next reconcile
                self.cache.store(manifest, blob)
        except OSError as exc:
            fault = (f"model cache not written ({exc.strerror or exc}): version {manifest.version} is served from "
                     f"memory; a restart without the registry would serve an older cached model")
            if not self._local_error:
                self.node.metrics.sync_failures.labels("disk").inc()
                log.error("%s", fault)
            self._local_error = fault
            return
        if self._local_error:
            log.info("model cache written again (version %d)", manifest.version)
        self._local_error = ""

    def _fetch_again(self, manifest: Manifest) -> bytes | None:
        blob = self.registry.blob(manifest.version)
        try:
            manifest.check_blob(blob or b"")
        except ManifestError:
            return None
        return blob

    def _repair_cache(self) -> None:
        """After a disk fault, once the cache directory takes writes again, keep the served model there."""
        current = self.node.holder.current()
        manifest = self._served.get(current.sha256) if current is not None else None
        if manifest is not None and self.cache.writable():
            self._keep_in_cache(manifest)

    def _serve_held(self, manifest: Manifest) -> bool:
        """Serve the manifest's bytes if they are loaded already (serving, or kept for rollback), under the
        manifest's number; False if they must be fetched. The same bytes can come back under a new number
        (republished after data loss) and a number can name new bytes: only the sha256 decides."""
        current, previous = self.node.holder.current(), self.node.holder.previous()
        label = version_label(manifest.version)
        named = (label, manifest.epoch)
        if current is not None and current.sha256 == manifest.sha256:
            if (current.version, current.epoch) != named:
                self.node.swap(replace(current, version=label, epoch=manifest.epoch))
        elif previous is not None and previous.sha256 == manifest.sha256:
            if (previous.version, previous.epoch) == named:
                self.node.rollback()
            else:
                self.node.swap(replace(previous, version=label, epoch=manifest.epoch))
            log.info("serving version %d again from the model kept loaded (sha256 %s)", manifest.version,
                     manifest.sha256[:12])
        else:
            return False
        if self._served.get(manifest.sha256) != manifest:
            self._remember(manifest)
            self._keep_in_cache(manifest)
        self._error = None
        return True

    def _remember(self, manifest: Manifest) -> None:
        """Keep the manifests of the models held: relabels are noticed and a repaired cache written from them."""
        self._served[manifest.sha256] = manifest
        held = {m.sha256 for m in (self.node.holder.current(), self.node.holder.previous()) if m is not None}
        self._served = {sha: m for sha, m in self._served.items() if sha in held}

    def _verified_manifest(self, target: int, raw: bytes | None, epoch: str) -> Manifest:
        """Signature, identity (fleet, version, epoch where it was read), input spec and size limit: all checked
        on the manifest alone, before a byte of the blob is read."""
        stage = "missing"
        try:
            if raw is None:
                raise ManifestError(f"version {target} is not in the registry")
            stage = "key"
            verifier = self.trusted.verifier()
            stage = "signature"
            manifest = Manifest.from_json(raw)
            verifier.verify(manifest)
            stage = "identity"
            manifest.check_identity(self.registry.keys.fleet, target, epoch)
            stage = "input"
            manifest.check_input()
            stage = "integrity"
            if manifest.size > self.config.max_model_bytes:
                raise ManifestError(f"version {target}: {manifest.size:,} bytes exceed the node's limit of "
                                    f"{self.config.max_model_bytes:,}")
        except KeyFileError as exc:
            raise VersionRefused(stage, f"cannot verify version {target}: {exc}") from exc
        except ManifestError as exc:
            raise VersionRefused(stage, str(exc)) from exc
        return manifest

    def _fetch_verified(self, manifest: Manifest) -> tuple[bytes, LoadedModel]:
        """The blob's stored length first (STRLEN), its bytes next, then load and self-check."""
        version = manifest.version
        stage = "integrity"
        try:
            stored = self.registry.blob_size(version)
            if stored != manifest.size:
                raise ManifestError(f"version {version}: stored blob is {stored:,} bytes, the manifest says {manifest.size:,}")
            blob = self.registry.blob(version) or b""
            manifest.check_blob(blob)
            stage = "load"
            return blob, self.loader(blob, version_label(version), self.config.threads)
        except (ManifestError, ModelLoadError) as exc:
            raise VersionRefused(stage, str(exc)) from exc

    def _report(self) -> None:
        current = self.node.holder.current()
        error = self._error or SyncFault("", None, "")
        field_stats, traffic = self.field_stats() if self.field_stats else ({}, {})
        status = NodeStatus(
            node_id=self.config.node_id,
            version=current.version if current else None,
            sha256=current.sha256 if current else "",
            epoch=current.epoch if current else "",
            last_error=error.message,
            error_version=error.version,
            local_error=self._local_error,
            heartbeat=time.time(),
            started=self._started,
            field_stats=field_stats,
            traffic=traffic,
        )
        ttl_s = 3 * heartbeat_interval(self.config.heartbeat_s, self._fleet_size)
        self._fleet_size, server_time = self.registry.write_status(status, ttl_s)
        self._last_report = status.heartbeat
        self.node.metrics.clock_skew.set(status.heartbeat - server_time)
