"""What a node calls the model it serves, and the one conversion from a registry version.

The registry numbers its versions with ints (manifests, the desired record, rollouts); a node names what it serves
with a label (responses, metrics, status records) that is either such a number as text or the name a bootstrap
file is served under. Everything that compares the two goes through here, never through `str()` of its own.
"""

from __future__ import annotations

VersionLabel = str


def version_label(version: int) -> VersionLabel:
    """The label a node serves registry version `version` under."""
    return str(version)


def is_version(label: VersionLabel | None, version: int | None) -> bool:
    """Whether a node's label names registry version `version`."""
    return label is not None and version is not None and label == version_label(version)
