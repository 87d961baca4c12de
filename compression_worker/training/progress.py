"""Epoch progress for whoever runs a pipeline (the job worker reports it to Redis), without threading a
callback through every stage: the runner installs a listener for the duration of a stage."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

EpochListener = Callable[[int, int, dict], None]  # (epoch done, epochs in this run, the epoch's log as a dict)

_listener: ContextVar[EpochListener | None] = ContextVar("edgefer_epoch_listener", default=None)


@contextmanager
def epoch_listener(listener: EpochListener) -> Iterator[None]:
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


def report_epoch(epoch: int, epochs: int, log: dict) -> None:
    listener = _listener.get()
    if listener is not None:
        listener(epoch, epochs, log)
