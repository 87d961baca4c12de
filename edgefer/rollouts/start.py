"""Starting a rollout: the library call behind `edgefer-registry rollout start` and a worker job's rollout setting."""

from __future__ import annotations

from edgefer.registry.store import ModelRegistry, RegistryError
from edgefer.rollouts.spec import RolloutSpec
from edgefer.rollouts.store import RolloutError, RolloutRecord, RolloutStore


def start_rollout(
    registry: ModelRegistry, version: int, spec: RolloutSpec, source: str, force: bool = False
) -> RolloutRecord:
    """A new rollout of `version` against the fleet's desired version (what it rolls back to); `force` replaces
    a stored rollout record that cannot be read."""
    desired = registry.desired()
    if desired is None:
        raise RolloutError("no desired version to roll out against: promote a first version")
    if registry.manifest(version) is None:
        raise RegistryError(f"version {version} is not published in fleet {registry.keys.fleet}")
    if version == desired.version:
        raise RolloutError(f"version {version} is already the desired version")
    return RolloutStore(registry.client, registry.keys).create(
        RolloutRecord(version=version, stable=desired.version, spec=spec.to_dict(), source=source), force
    )
