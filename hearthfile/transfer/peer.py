"""What a transfer needs of a peer, and what it reports as it goes (types only).

A peer is anything with the ``call``/``open_call`` of a bus connection (the
``Peer`` protocol), so transfer code needs no pool, no gossip and no node.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from hearthfile.blobs.chunker import Manifest
from hearthfile.cids import Cid
from hearthfile.identity import NodeId


class OutgoingCall(Protocol):
    async def send(self, item: Any) -> None: ...
    async def send_end(self) -> None: ...
    def __aiter__(self) -> AsyncIterator[Any]: ...
    async def result(self) -> Any: ...


class Peer(Protocol):
    @property
    def peer(self) -> NodeId: ...

    async def call(
        self,
        cap: str,
        args: Any = None,
        *,
        version: tuple[int, int] = (1, 0),
        timeout_s: float | None = None,
    ) -> Any: ...

    def open_call(
        self, cap: str, args: Any = None, *, version: tuple[int, int] = (1, 0)
    ) -> AbstractAsyncContextManager[OutgoingCall]: ...


@dataclass(slots=True)
class Progress:
    """What a transfer has done so far; handed to the progress callback."""

    cid: Cid
    total_bytes: int = 0
    done_bytes: int = 0
    chunks_total: int = 0
    chunks_done: int = 0
    sources: int = 0


ProgressFn = Callable[[Progress], None]


def bytes_of(manifest: Manifest, indices: Sequence[int]) -> int:
    """The bytes of the chunks at ``indices``."""
    return sum(manifest.chunk_length(i) for i in indices)
