"""A stream's incoming frames with bounded memory: the newest frame wins, and each connection has a byte budget.

A reader task takes frames off the wire as they come, while its connection has budget. At most
one frame per stream waits while the previous one is processed: when a newer one arrives, the waiting
one is dropped at once and only its sequence number is kept (to answer it DROPPED, in order). Every
frame held, waiting or in work, counts against its connection's byte budget; a frame that does not fit
is dropped on arrival, and the stream then reads nothing more until its connection has room again, so
HTTP/2 flow control holds the sender back instead of the node reading (and discarding) at wire speed.
So a stream holds at most two frames, and a connection at most its budget, however fast its cameras send.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc

from edgefer.v1 import edge_pb2


@dataclass
class ConnectionBudget:
    """Bytes of frames each connection (gRPC peer) has waiting or in work, against one limit per connection.
    Used from the server's event loop only."""

    limit: int
    held: dict[str, int] = field(default_factory=dict)
    _freed: asyncio.Event = field(default_factory=asyncio.Event)

    def take(self, peer: str, size: int) -> bool:
        used = self.held.get(peer, 0)
        if used + size > self.limit:
            return False
        self.held[peer] = used + size
        return True

    def give_back(self, peer: str, size: int) -> None:
        left = self.held.get(peer, 0) - size
        if left > 0:
            self.held[peer] = left
        else:
            self.held.pop(peer, None)  # no entry outlives a connection's last frame
        self._freed.set()  # wakes every stream waiting for room, then a fresh event for the next wait
        self._freed = asyncio.Event()

    async def room(self, peer: str, size: int) -> None:
        """Until `size` more bytes would fit in the connection's budget, or it holds nothing at all."""
        while 0 < self.held.get(peer, 0) and self.held.get(peer, 0) + size > self.limit:
            await self._freed.wait()


@dataclass(frozen=True)
class StreamItem:
    """Sequence numbers dropped since the last item (answer DROPPED, in this order), then a frame to process."""

    dropped: list[int]
    frame: edge_pb2.Frame | None


async def one_by_one(requests: AsyncIterator[edge_pb2.Frame]) -> AsyncIterator[StreamItem]:
    """Every frame in turn (drop_stale_frames off): gRPC flow control holds the sender back."""
    async for frame in requests:
        yield StreamItem([], frame)


async def latest_frames(requests: AsyncIterator[edge_pb2.Frame], budget: ConnectionBudget, peer: str) -> AsyncIterator[StreamItem]:
    """The newest waiting frame each time the consumer asks, with what was dropped before it."""
    dropped: list[int] = []
    waiting: tuple[edge_pb2.Frame, int] | None = None
    arrived = asyncio.Event()
    finished = False

    async def read() -> None:
        nonlocal finished, waiting
        try:
            async for frame in requests:
                size = frame.ByteSize()
                if waiting is not None:
                    dropped.append(waiting[0].sequence)
                    budget.give_back(peer, waiting[1])
                    waiting = None
                if budget.take(peer, size):
                    waiting = (frame, size)
                    arrived.set()
                    continue
                dropped.append(frame.sequence)
                arrived.set()
                await budget.room(peer, size)  # read on only when the connection has room: backpressure
        except grpc.RpcError:  # the client went away or cancelled: end the stream
            pass
        finally:
            finished = True
            arrived.set()

    reader = asyncio.get_running_loop().create_task(read())
    try:
        while True:
            if waiting is None and not dropped:
                if finished:
                    return
                arrived.clear()  # no await between the check and the clear: the reader cannot slip in
                await arrived.wait()
                continue
            item, held = StreamItem(dropped, waiting[0] if waiting else None), waiting[1] if waiting else 0
            dropped, waiting = [], None
            try:
                yield item
            finally:
                budget.give_back(peer, held)
    finally:
        reader.cancel()
        if waiting is not None:
            budget.give_back(peer, waiting[1])
