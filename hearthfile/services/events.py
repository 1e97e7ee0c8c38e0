"""The node's local event stream: what ``hearthfile events`` shows (trio shell).

Components report facts (an advert accepted, a peer up or down, a transfer
finished, a source quarantined) with ``emit``; the log keeps the most recent
``capacity`` of them, numbered, and wakes followers. Memory is bounded by the
capacity whatever the event rate; a follower that falls behind by more than
that just misses the oldest ones (it sees the gap in the numbers).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import trio

DEFAULT_CAPACITY: Final = 1000


class EventLog:
    def __init__(
        self, capacity: int = DEFAULT_CAPACITY, clock: Callable[[], float] = time.time
    ) -> None:
        self._events: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._next = 1
        self._clock = clock
        self._changed = trio.Event()

    def emit(self, kind: str, **fields: Any) -> None:
        """Record one event; ``fields`` must be msgpack-friendly."""
        self._events.append({"seq": self._next, "at": self._clock(), "event": kind, **fields})
        self._next += 1
        self._changed.set()
        self._changed = trio.Event()

    def since(self, after: int) -> list[dict[str, Any]]:
        return [e for e in self._events if e["seq"] > after]

    async def follow(self, after: int = 0) -> AsyncIterator[dict[str, Any]]:
        """Events after ``after``, then new ones as they come, forever."""
        while True:
            changed = self._changed
            for event in self.since(after):
                after = event["seq"]
                yield event
            await changed.wait()
