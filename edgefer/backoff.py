"""Capped exponential backoff with full jitter: nodes reconnecting to Redis and clients reconnecting to a node
do not come back in lockstep."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, initial_s: float = 0.2, cap_s: float = 10.0, rng: random.Random | None = None) -> None:
        self.initial_s = initial_s
        self.cap_s = cap_s
        self._rng = rng or random.Random()
        self._attempt = 0

    def next_delay(self) -> float:
        """The wait before the next try: uniform in [0, d] with d doubling up to the cap ("full jitter"), so a
        fleet that lost Redis comes back spread over the whole window, not bunched in its second half."""
        ceiling = min(self.cap_s, self.initial_s * 2**self._attempt)
        self._attempt += 1
        return self._rng.uniform(0, ceiling)

    def reset(self) -> None:
        self._attempt = 0
