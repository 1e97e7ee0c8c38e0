"""The outgoing frame queue of one bus connection, and a re-armable wake-up (trio shell).

``Outbox`` holds encoded frames in wire order for the connection's single writer task.
Two ways in: ``put`` (data, answers, requests) waits for one of ``OUTBOX_FRAMES``
places, which bounds the memory of frames waiting for the socket; ``put_nowait``
(credit, cancel, refusals -- sent from code that must never wait, like the reader)
skips the places but refuses past ``MAX_QUEUED_FRAMES``, the sign of a peer that sends
requests while not reading our answers. Owned by hearthfile/bus/connection.py.
"""

from __future__ import annotations

from collections import deque
from typing import Final

import trio

from hearthfile.errors import PeerUnavailable, RemoteProtocolError

#: Encoded frames queued for the writer before a data sender waits: each may be a
#: 256 KiB chunk, and a few keep the socket busy while bounding memory per connection.
OUTBOX_FRAMES: Final = 4
#: Frames queued without waiting (credit, cancel, refusals) beyond which the peer is
#: sending requests while not reading our answers: we drop it rather than buffer more.
MAX_QUEUED_FRAMES: Final = 4096


class Signal:
    """A re-armable broadcast: each waiter re-checks its condition after a fire."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = trio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait(self) -> None:
        await self._event.wait()


class Outbox:
    """Encoded frames in wire order, drained by the connection's single writer.

    Frames that may wait (data, answers, requests) first take one of ``OUTBOX_FRAMES``
    places, handed out first come first served by a semaphore, so a thousand blocked
    senders cost one wake-up per frame written, not a thousand. Frames that must not
    wait skip the places but are bounded by ``MAX_QUEUED_FRAMES``.
    """

    def __init__(self, peer: str) -> None:
        self._peer = peer
        self._frames: deque[tuple[memoryview, bool]] = deque()  # (frame, holds a place)
        self._places = trio.Semaphore(OUTBOX_FRAMES)
        self._ready = Signal()  # waited on by the writer alone
        self.closed_reason: str | None = None

    async def put(self, data: memoryview) -> None:
        """Queue a frame once a place is free."""
        await self.reserve()
        self.put_reserved(data)

    async def reserve(self) -> None:
        """Take a place for one ``put_reserved``; give it back with ``unreserve``."""
        self._raise_if_closed()
        await self._places.acquire()
        if self.closed_reason is not None:
            self._places.release()
            self._raise_if_closed()

    def unreserve(self) -> None:
        self._places.release()

    def put_reserved(self, data: memoryview) -> None:
        self._frames.append((data, True))
        self._ready.fire()

    def put_nowait(self, data: memoryview) -> None:
        """Queue a frame at once. Raises ``RemoteProtocolError`` when the peer has
        left ``MAX_QUEUED_FRAMES`` unread (and ``PeerUnavailable`` once closed)."""
        self._raise_if_closed()
        if len(self._frames) >= MAX_QUEUED_FRAMES:
            raise RemoteProtocolError(f"peer left {MAX_QUEUED_FRAMES} frames unread")
        self._frames.append((data, False))
        self._ready.fire()

    async def get(self) -> memoryview:
        while not self._frames:
            await self._ready.wait()
        data, placed = self._frames.popleft()
        if placed:
            self._places.release()
        return data

    def close(self, reason: str) -> None:
        self.closed_reason = reason
        self._frames.clear()
        # Wake every sender waiting for a place; each sees the close and raises.
        for _ in range(self._places.statistics().tasks_waiting):
            self._places.release()

    def _raise_if_closed(self) -> None:
        if self.closed_reason is not None:
            raise PeerUnavailable(self._peer, self.closed_reason)
