"""A finished rollout's outcome applied to the registry, once: by the controller, and by an operator's abort (which
must take the canary away at once, controller or not). Free of the statistics, so the edge image's CLI has it."""

from __future__ import annotations

from dataclasses import replace

from edgefer.registry.store import ModelRegistry
from edgefer.rollouts.store import RolloutRecord, RolloutStore


def settle(registry: ModelRegistry, store: RolloutStore, record: RolloutRecord) -> RolloutRecord | None:
    """Apply a finished rollout's outcome to the registry if nothing else has changed it since, then mark the
    record settled so that it is never applied again (None when an operator changed the record meanwhile)."""
    desired = registry.desired()
    in_rollout_shape = (
        desired is not None
        and desired.version == record.stable
        and desired.canary is not None
        and desired.canary.version == record.version
    )
    if in_rollout_shape:
        registry.promote(record.version if record.state == "promoted" else record.stable)
    return store.put_if(replace(record, settled=True), record.revision)
