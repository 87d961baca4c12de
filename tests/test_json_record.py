"""Every shared record reads back what it wrote, ignores a field a later release adds, and turns anything else
into its own error naming the record (never a bare TypeError in a caller)."""

from __future__ import annotations

import json

import pytest

from edgefer.jobs.lineage import Artefact, LineageError
from edgefer.registry.desired import Canary, DesiredRecord, DesiredRecordError
from edgefer.registry.manifest import Manifest, ManifestError
from edgefer.registry.profile import FleetProfile, ProfileError
from edgefer.registry.status import NodeStatus, NodeStatusError
from edgefer.rollouts.store import RolloutError, RolloutRecord

RECORDS = [
    (DesiredRecord(version=3, canary=Canary(version=4, nodes=["a"], percent=10.0), previous=2), DesiredRecordError),
    (Manifest(version=1, name="m", sha256="0" * 64, size=10, input={"shape": [1, 1, 48, 48]}), ManifestError),
    (NodeStatus(node_id="n1", version="3", heartbeat=1.0), NodeStatusError),
    (RolloutRecord(version=4, stable=3, spec={"steps": [10, 100]}), RolloutError),
    (Artefact(sha256="ab", kind="teacher", arch="ean-m", file="ab.pt", data="d", split="s", held_back_accuracy=0.6),
     LineageError),
    (FleetProfile(max_macs=2_500_000), ProfileError),
]


@pytest.mark.parametrize(("record", "error"), RECORDS, ids=lambda r: type(r).__name__)
def test_a_record_reads_back_what_it_wrote(record, error) -> None:
    assert type(record).from_json(record.to_json()) == record
    assert record.to_json() == json.dumps(json.loads(record.to_json()), sort_keys=True)  # equal records, equal bytes


@pytest.mark.parametrize(("record", "error"), [r for r in RECORDS if not isinstance(r[0], FleetProfile)],
                         ids=lambda r: type(r).__name__)
def test_a_field_a_later_release_adds_is_ignored(record, error) -> None:
    newer = {**json.loads(record.to_json()), "added_in_a_later_release": [1, 2]}
    assert type(record).from_json(json.dumps(newer)) == record


def test_a_fleet_profile_names_an_unknown_budget_instead() -> None:
    with pytest.raises(ProfileError, match="max_watts"):
        FleetProfile.from_json(json.dumps({"max_watts": 3}))


@pytest.mark.parametrize(("record", "error"), RECORDS, ids=lambda r: type(r).__name__)
@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", '"text"', "{}"])
def test_anything_else_is_the_records_own_error(record, error, raw) -> None:
    if raw == "{}" and isinstance(record, FleetProfile):
        return  # every budget has a default: {} is the default profile
    with pytest.raises(error):
        type(record).from_json(raw)


def test_wrong_types_that_readers_rely_on_are_refused() -> None:
    with pytest.raises(DesiredRecordError, match="version"):
        DesiredRecord.from_json('{"version": "7"}')
    with pytest.raises(DesiredRecordError, match="canary version"):
        DesiredRecord.from_json('{"version": 7, "canary": {"version": "8"}}')
    with pytest.raises(NodeStatusError, match="node_id"):
        NodeStatus.from_json('{"node_id": 5, "version": "1"}')


def test_a_partial_record_names_its_missing_fields_not_a_python_signature() -> None:
    with pytest.raises(NodeStatusError) as caught:
        NodeStatus.from_json('{"heartbeat": 1.0}')
    assert "missing fields node_id, version" in str(caught.value) and "__init__" not in str(caught.value)
    with pytest.raises(RolloutError, match="missing field spec$|missing field spec\\)"):
        RolloutRecord.from_json('{"version": 4, "stable": 3}')
