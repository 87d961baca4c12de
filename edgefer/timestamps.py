"""The one timestamp format of EdgeFER records (cards, manifests, desired records, loaded models)."""

from __future__ import annotations

import time


def utc_now_iso() -> str:
    """Now, in UTC, to the second: 2026-11-28T05:07:59Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
