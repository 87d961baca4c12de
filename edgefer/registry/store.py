"""The registry in Redis: publish signed versions, read them back, set the desired record, node status.

Writes that must be all-or-nothing (a version's manifest + bytes + index entry; a desired record +
its revision) run in MULTI/EXEC, and read-modify-write of the desired record is guarded by WATCH, so
two operators cannot silently overwrite each other.
"""

from __future__ import annotations

import json
import time
import uuid

import redis

from edgefer.registry.desired import Canary, DesiredRecord, DesiredRecordError
from edgefer.registry.keys import FleetKeys
from edgefer.registry.manifest import Manifest, ManifestError, new_manifest
from edgefer.registry.profile import FleetProfile, ProfileError
from edgefer.registry.signing import ManifestSigner
from edgefer.registry.status import NodeRow, NodeStatus, NodeStatusError, fleet_rows
from edgefer.timestamps import utc_now_iso

# A node's status write, stamped with Redis's clock: liveness is judged by the server's time, never by a board's
# (a Raspberry Pi boots with an old clock until NTP answers). Returns the fleet's size and the server's time.
_WRITE_STATUS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[3])
return {redis.call('ZCARD', KEYS[2]), tostring(now)}
"""


class RegistryError(ValueError):
    """An operator request the registry refuses (unknown version, nothing to roll back to, ...)."""


class ModelRegistry:
    """A fleet's registry. Writes and operator reads go to `client` (the primary); what nodes read on every
    reconcile (desired record, manifests, blobs, announcements) goes to `reader`, a replica when given."""

    def __init__(self, client: redis.Redis, fleet: str = "default", reader: redis.Redis | None = None) -> None:
        self.client = client
        self.reader = reader or client
        self.keys = FleetKeys(fleet)

    # -- versions ---------------------------------------------------------------------------------

    def epoch(self) -> str:
        """This registry's epoch, made with its first version (SET NX: concurrent publishers agree on one)."""
        self.client.set(self.keys.epoch, uuid.uuid4().hex, nx=True)
        return self.current_epoch()

    def current_epoch(self) -> str:
        """The stored epoch, without making one ('' for a registry that never stored a version)."""
        raw = self.client.get(self.keys.epoch)
        return raw.decode() if raw is not None else ""

    def publish(
        self,
        blob: bytes,
        name: str,
        input_spec: dict,
        metrics: dict,
        signer: ManifestSigner,
        promote: bool = False,
        idempotency_key: str | None = None,
        lineage: dict | None = None,
    ) -> Manifest:
        """Store a new signed version, and with `promote` make it the desired version in the same transaction
        (a publisher killed half way leaves neither a stored version that is never rolled out nor a desired
        record naming nothing).

        With an idempotency key (a job id), a second publish under the same key stores nothing and
        returns the version the first one stored: a job delivered twice publishes once.
        """
        marker = self.keys.published_by(idempotency_key) if idempotency_key else None
        if marker and (earlier := self.client.get(marker)) is not None:
            return self._existing(int(earlier))
        epoch = self.epoch()
        version = int(self.client.incr(self.keys.version_counter))
        manifest = signer.sign(new_manifest(blob, version, name, input_spec, metrics, self.latest_version(),
                                            self.keys.fleet, epoch, lineage))
        earlier = self._store(manifest, blob, marker, promote)
        return manifest if earlier is None else self._existing(earlier)

    def _existing(self, version: int) -> Manifest:
        manifest = self.manifest(version)
        if manifest is None:
            raise RegistryError(f"version {version} is recorded as published but missing")
        return manifest

    def put(self, manifest: Manifest, blob: bytes) -> None:
        """Store a signed manifest and its bytes as they are (repairs, tests); a stored version is never overwritten."""
        self._store(manifest, blob, None, promote=False)

    def _store(self, manifest: Manifest, blob: bytes, marker: str | None, promote: bool) -> int | None:
        """One MULTI/EXEC: bytes, manifest, index entry, the job's marker and (with `promote`) the desired record.
        Returns the version an earlier delivery of the same job stored, or None when this one stored it."""

        def transaction(pipe: redis.client.Pipeline) -> int | None:
            if marker and (earlier := pipe.get(marker)) is not None:
                return int(earlier)
            if pipe.exists(self.keys.manifest(manifest.version)):
                raise RegistryError(f"version {manifest.version} already exists")
            if manifest.epoch and pipe.get(self.keys.epoch) != manifest.epoch.encode():
                raise RegistryError("the registry lost its data while this version was being published; publish again")
            old = self._read_desired(pipe, force=False) if promote else None
            pipe.multi()
            if marker:
                pipe.set(marker, manifest.version)
            pipe.set(self.keys.blob(manifest.version), blob)
            pipe.set(self.keys.manifest(manifest.version), manifest.to_json())
            pipe.zadd(self.keys.versions, {str(manifest.version): time.time()})
            pipe.publish(self.keys.channel, json.dumps({"event": "published", "version": manifest.version}))
            if promote:
                self._write_desired(pipe, old, _promoted(old, manifest.version))
            return None

        watched = [self.keys.manifest(manifest.version), self.keys.epoch, self.keys.desired] + ([marker] if marker else [])
        return self.client.transaction(transaction, *watched, value_from_callable=True)

    def latest_version(self) -> int | None:
        newest = self.client.zrevrange(self.keys.versions, 0, 0)
        return int(newest[0]) if newest else None

    def versions(self) -> list[Manifest]:
        ids = [int(v) for v in self.client.zrange(self.keys.versions, 0, -1)]
        raws = self.client.mget([self.keys.manifest(v) for v in ids]) if ids else []
        return [Manifest.from_json(raw) for raw in raws if raw is not None]

    def manifest(self, version: int) -> Manifest | None:
        raw = self.raw_manifest(version)
        return Manifest.from_json(raw) if raw is not None else None

    def raw_manifest(self, version: int) -> bytes | None:
        """The manifest's stored bytes: what a node fingerprints to remember what it refused."""
        return self.reader.get(self.keys.manifest(version))

    def blob(self, version: int) -> bytes | None:
        return self.reader.get(self.keys.blob(version))

    def blob_size(self, version: int) -> int:
        """Length of a version's stored bytes, read without them (0 when absent)."""
        return int(self.reader.strlen(self.keys.blob(version)))

    def fetch(self, version: int) -> tuple[Manifest, bytes]:
        """Manifest and bytes of one version, read in one round trip."""
        raw, blob = self.client.mget([self.keys.manifest(version), self.keys.blob(version)])
        if raw is None or blob is None:
            raise ManifestError(f"version {version} is not in the registry")
        return Manifest.from_json(raw), blob

    # -- desired record ---------------------------------------------------------------------------

    def desired(self) -> DesiredRecord | None:
        raw = self.client.get(self.keys.desired)
        return DesiredRecord.from_json(raw) if raw is not None else None

    def profile(self) -> FleetProfile:
        """The fleet's device class (the default one when none is stored)."""
        return self.stored_profile() or FleetProfile()

    def stored_profile(self) -> FleetProfile | None:
        raw = self.client.get(self.keys.profile)
        try:
            return FleetProfile.from_json(raw) if raw is not None else None
        except ProfileError as exc:
            raise ProfileError(f"the profile of fleet {self.keys.fleet} cannot be read ({exc}); "
                               "`edgefer-registry profile set FIELD VALUE ...` replaces it") from exc

    def set_profile(self, profile: FleetProfile) -> None:
        self.client.set(self.keys.profile, profile.to_json())

    def desired_or_problem(self) -> tuple[DesiredRecord | None, str | None]:
        """The desired record, or None and what is wrong with it: views of the fleet (status, metrics) go on
        without a target where a node would refuse the record."""
        try:
            return self.desired(), None
        except DesiredRecordError as exc:
            return None, str(exc)

    def desired_state(self) -> tuple[DesiredRecord | None, str]:
        """The desired record and the registry's epoch, read in one round trip (what a node reconciles against)."""
        raw, epoch = self.reader.mget([self.keys.desired, self.keys.epoch])
        return (DesiredRecord.from_json(raw) if raw is not None else None), (epoch.decode() if epoch else "")

    def promote(self, version: int, force: bool = False) -> DesiredRecord:
        """Serve `version` on every node (ends any canary); `force` replaces a desired record that cannot be read."""
        self._require(version)
        return self._update(lambda old: _promoted(old, version), force)

    def set_canary(self, version: int, nodes: list[str], percent: float) -> DesiredRecord:
        """Serve `version` on the named nodes and/or a stable share of nodes; the rest keep the desired version."""
        self._require(version)
        if not nodes and not 0 < percent <= 100:
            raise RegistryError("a canary needs node ids or a percentage in (0, 100]")

        def change(old: DesiredRecord | None) -> DesiredRecord:
            if old is None:
                raise RegistryError("promote a version first: a canary runs beside a desired version")
            return DesiredRecord(old.version, Canary(version, list(nodes), percent), old.previous)

        return self._update(change)

    def rollback(self, version: int | None = None) -> DesiredRecord:
        """Back to `version`, or to the version served before the last promotion."""
        current = self.desired()
        target = version if version is not None else (current.previous if current else None)
        if target is None:
            raise RegistryError("no previous version to roll back to; name one")
        return self.promote(target)

    def _require(self, version: int) -> None:
        if not self.client.exists(self.keys.manifest(version)):
            raise RegistryError(f"version {version} is not in the registry")

    def _update(self, change, force: bool = False) -> DesiredRecord:
        def transaction(pipe: redis.client.Pipeline) -> DesiredRecord:
            old = self._read_desired(pipe, force)
            new = change(old)
            pipe.multi()
            return self._write_desired(pipe, old, new)

        return self.client.transaction(transaction, self.keys.desired, value_from_callable=True)

    def _read_desired(self, pipe: redis.client.Pipeline, force: bool) -> DesiredRecord | None:
        raw = pipe.get(self.keys.desired)
        try:
            return DesiredRecord.from_json(raw) if raw is not None else None
        except DesiredRecordError as exc:
            if not force:
                raise RegistryError(f"{exc}; `promote VERSION --force` replaces it") from exc
            return None

    def _write_desired(self, pipe: redis.client.Pipeline, old: DesiredRecord | None, new: DesiredRecord) -> DesiredRecord:
        """Queue the new record (revision one past the old) and its announcement inside a MULTI."""
        record = DesiredRecord(new.version, new.canary, new.previous, (old.revision if old else 0) + 1, utc_now_iso())
        pipe.set(self.keys.desired, record.to_json())
        pipe.publish(self.keys.channel, json.dumps({"event": "desired", "revision": record.revision}))
        return record

    # -- node status ------------------------------------------------------------------------------

    def write_status(self, status: NodeStatus, ttl_s: float) -> tuple[int, float]:
        """Write a node's status record and its last-seen time by the server's clock, atomically; returns the
        fleet's size (nodes ever seen) and the server's time of the write (the node's clock skew is its own
        heartbeat minus that)."""
        size, now = self.client.eval(
            _WRITE_STATUS, 2, self.keys.node_status(status.node_id), self.keys.nodes,
            status.to_json(), int(ttl_s * 1000), status.node_id,
        )
        return int(size), float(now)

    def server_time(self) -> float:
        """Redis's clock (unix seconds): what node liveness is measured against."""
        seconds, micros = self.client.time()
        return seconds + micros / 1e6

    def node_statuses(self) -> tuple[dict[str, float], dict[str, NodeStatus | None], dict[str, str]]:
        """Every node ever seen with the server's time of its last status write; its live status record (None once expired); and the
        records that cannot be read, with the reason (shown as such, never fatal to the fleet view)."""
        seen = {k.decode(): float(v) for k, v in self.client.zrange(self.keys.nodes, 0, -1, withscores=True)}
        raws = self.client.mget([self.keys.node_status(n) for n in seen]) if seen else []
        statuses: dict[str, NodeStatus | None] = {}
        unreadable: dict[str, str] = {}
        for node_id, raw in zip(seen, raws):
            try:
                statuses[node_id] = NodeStatus.from_json(raw) if raw is not None else None
            except NodeStatusError as exc:
                statuses[node_id], unreadable[node_id] = None, str(exc)
        return seen, statuses, unreadable

    def fleet_view(self, desired: DesiredRecord | None, stale_after_s: float, now: float | None = None) -> list[NodeRow]:
        """One row per node: what it serves against its target version and that version's sha256; liveness by the
        server's clock at `now` (a caller that shows ages passes the time it shows them by)."""
        seen, statuses, unreadable = self.node_statuses()
        targets = {desired.version, desired.canary.version if desired.canary else desired.version} if desired else set()
        target_sha256 = {}
        for version in targets:
            try:
                manifest = self.manifest(version)
            except ManifestError:
                manifest = None
            target_sha256[version] = manifest.sha256 if manifest else ""
        now = self.server_time() if now is None else now
        return fleet_rows(seen, statuses, unreadable, desired, target_sha256, stale_after_s, now)

    def forget_node(self, node_id: str) -> None:
        self.client.zrem(self.keys.nodes, node_id)
        self.client.delete(self.keys.node_status(node_id))


def _promoted(old: DesiredRecord | None, version: int) -> DesiredRecord:
    """The record after promoting `version`: no canary, and the version served before as the rollback target."""
    if old is None:
        return DesiredRecord(version)
    return DesiredRecord(version, None, old.version if old.version != version else old.previous)
