"""The registry in Redis: publish signed versions, read them back, set the desired record, node status.

Writes that must be all-or-nothing (a version's manifest + bytes + index entry; a desired record +
its revision) run in MULTI/EXEC, and read-modify-write of the desired record is guarded by WATCH, so
two operators cannot silently overwrite each other.
"""

from __future__ import annotations

import json
import time

import redis

from edgefer.registry.desired import Canary, DesiredRecord, DesiredRecordError
from edgefer.registry.keys import FleetKeys
from edgefer.registry.manifest import Manifest, ManifestError, new_manifest
from edgefer.registry.signing import ManifestSigner
from edgefer.registry.status import NodeStatus
from edgefer.timestamps import utc_now_iso


class RegistryError(ValueError):
    """An operator request the registry refuses (unknown version, nothing to roll back to, ...)."""


class ModelRegistry:
    def __init__(self, client: redis.Redis, fleet: str = "default") -> None:
        self.client = client
        self.keys = FleetKeys(fleet)

    # -- versions ---------------------------------------------------------------------------------

    def publish(
        self,
        blob: bytes,
        name: str,
        input_spec: dict,
        metrics: dict,
        signer: ManifestSigner,
        promote: bool = False,
        idempotency_key: str | None = None,
    ) -> Manifest:
        """Store a new signed version (and optionally make it the fleet's desired version).

        With an idempotency key (a job id), a second publish under the same key stores nothing and
        returns the version the first one stored: a job delivered twice publishes once.
        """
        marker = self.keys.published_by(idempotency_key) if idempotency_key else None
        if marker and (earlier := self.client.get(marker)) is not None:
            return self._existing(int(earlier))
        version = int(self.client.incr(self.keys.version_counter))
        manifest = signer.sign(new_manifest(blob, version, name, input_spec, metrics, parent=self.latest_version()))
        try:
            self.put(manifest, blob, marker)
        except redis.WatchError:  # another delivery of the same job published meanwhile
            return self._existing(int(self.client.get(marker)))
        if promote:
            self.promote(version)
        return manifest

    def _existing(self, version: int) -> Manifest:
        manifest = self.manifest(version)
        if manifest is None:
            raise RegistryError(f"version {version} is recorded as published but missing")
        return manifest

    def put(self, manifest: Manifest, blob: bytes, marker: str | None = None) -> None:
        """Store a manifest and its bytes as they are; a version, once stored, is never overwritten."""
        if self.client.exists(self.keys.manifest(manifest.version)):
            raise RegistryError(f"version {manifest.version} already exists")
        with self.client.pipeline(transaction=True) as tx:
            if marker:
                tx.watch(marker)
                if tx.get(marker) is not None:
                    raise redis.WatchError(marker)
                tx.multi()
                tx.set(marker, manifest.version)
            tx.set(self.keys.blob(manifest.version), blob)
            tx.set(self.keys.manifest(manifest.version), manifest.to_json())
            tx.zadd(self.keys.versions, {str(manifest.version): time.time()})
            tx.publish(self.keys.channel, json.dumps({"event": "published", "version": manifest.version}))
            tx.execute()

    def latest_version(self) -> int | None:
        newest = self.client.zrevrange(self.keys.versions, 0, 0)
        return int(newest[0]) if newest else None

    def versions(self) -> list[Manifest]:
        ids = [int(v) for v in self.client.zrange(self.keys.versions, 0, -1)]
        raws = self.client.mget([self.keys.manifest(v) for v in ids]) if ids else []
        return [Manifest.from_json(raw) for raw in raws if raw is not None]

    def manifest(self, version: int) -> Manifest | None:
        raw = self.client.get(self.keys.manifest(version))
        return Manifest.from_json(raw) if raw is not None else None

    def blob(self, version: int) -> bytes | None:
        return self.client.get(self.keys.blob(version))

    def blob_size(self, version: int) -> int:
        """Length of a version's stored bytes, read without them (0 when absent)."""
        return int(self.client.strlen(self.keys.blob(version)))

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

    def promote(self, version: int, force: bool = False) -> DesiredRecord:
        """Serve `version` on every node (ends any canary); `force` replaces a desired record that cannot be read."""
        self._require(version)

        def change(old: DesiredRecord | None) -> DesiredRecord:
            if old is None:
                return DesiredRecord(version)
            return DesiredRecord(version, None, old.version if old.version != version else old.previous)

        return self._update(change, force)

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
            raw = pipe.get(self.keys.desired)
            try:
                old = DesiredRecord.from_json(raw) if raw is not None else None
            except DesiredRecordError as exc:
                if not force:
                    raise RegistryError(f"{exc}; `promote VERSION --force` replaces it") from exc
                old = None
            new = change(old)
            record = DesiredRecord(new.version, new.canary, new.previous, (old.revision if old else 0) + 1, utc_now_iso())
            pipe.multi()
            pipe.set(self.keys.desired, record.to_json())
            pipe.publish(self.keys.channel, json.dumps({"event": "desired", "revision": record.revision}))
            return record

        return self.client.transaction(transaction, self.keys.desired, value_from_callable=True)

    # -- node status ------------------------------------------------------------------------------

    def write_status(self, status: NodeStatus, ttl_s: float) -> None:
        with self.client.pipeline(transaction=True) as tx:
            tx.set(self.keys.node_status(status.node_id), status.to_json(), px=int(ttl_s * 1000))
            tx.zadd(self.keys.nodes, {status.node_id: status.heartbeat})
            tx.execute()

    def node_statuses(self) -> tuple[dict[str, float], dict[str, NodeStatus | None]]:
        """Every node ever seen with its last heartbeat, and its live status record (None once expired)."""
        seen = {k.decode(): float(v) for k, v in self.client.zrange(self.keys.nodes, 0, -1, withscores=True)}
        raws = self.client.mget([self.keys.node_status(n) for n in seen]) if seen else []
        return seen, {n: NodeStatus.from_json(r) if r is not None else None for n, r in zip(seen, raws)}

    def forget_node(self, node_id: str) -> None:
        self.client.zrem(self.keys.nodes, node_id)
        self.client.delete(self.keys.node_status(node_id))
