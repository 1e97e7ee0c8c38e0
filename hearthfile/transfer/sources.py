"""Finding the holders of a blob and reaching them (trio shell).

``SourceFinder`` answers "who can give me this CID?" for a fetch. It asks the
source index (what gossip and adverts told us) first and dials each holder at
the address gossip gave for it; only when that finds nobody does it ask every
connected peer with ``file.list`` (a node that holds the blob but whose record
has not reached us yet). Either way at most ``max_sources`` holders from the
index join a fetch at its start; more join while it runs (``known``).

It also tells connected members that we are fetching a CID (``file.advertise``),
so that they may draw on us for the chunks we already hold (swarming) instead of
all hitting the origin.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, Protocol

import trio

from hearthfile.cids import Cid
from hearthfile.config import Address, parse_address
from hearthfile.errors import PeerUnavailable, ServiceError
from hearthfile.identity import NodeId
from hearthfile.transfer.peer import Peer

#: How long a ``file.list`` or ``file.advertise`` to one peer may take.
SOURCE_QUERY_TIMEOUT_S: Final = 5.0
#: Sources a fetch draws on at its start.
MAX_SOURCES: Final = 8


class Holder(Protocol):
    @property
    def node(self) -> NodeId: ...


class HolderIndex(Protocol):
    """The part of ``gossip.index.SourceIndex`` a finder uses."""

    def sources(self, cid: Cid, now: float) -> Sequence[Holder]: ...
    def record(self, node: NodeId, cids: Iterable[Cid], now: float) -> None: ...


class Connected(Protocol):
    @property
    def peer(self) -> NodeId: ...


class Peers(Protocol):
    """The part of ``bus.pool.PeerPool`` a finder uses."""

    def connection(self, node: NodeId) -> Peer | None: ...
    def connections(self) -> Sequence[Connected]: ...
    async def get(self, node: NodeId, address: Address | None = None) -> Peer: ...


class SourceFinder:
    def __init__(
        self,
        me: NodeId,
        peers: Peers,
        index: HolderIndex,
        *,
        addresses: Callable[[NodeId], Iterable[str]],
        member: Callable[[NodeId], bool],
        clock: Callable[[], float] = time.time,
        max_sources: int = MAX_SOURCES,
    ) -> None:
        """``addresses(node)``: where gossip says ``node`` listens; ``member(node)``:
        whether ``node`` may be told what we fetch."""
        self._me = me
        self._peers = peers
        self._index = index
        self._addresses = addresses
        self._member = member
        self._clock = clock
        self._max_sources = max_sources

    def connected(self) -> list[Peer]:
        """A connection to every peer we are connected to, ourselves (the CLI) left out."""
        nodes = {c.peer for c in self._peers.connections()} - {self._me}
        return [c for c in map(self._peers.connection, nodes) if c is not None]

    async def connect(self, node: NodeId) -> Peer | None:
        """A connection to ``node``, dialing the addresses gossip gave for it, then the
        last address the pool knows."""
        conn = self._peers.connection(node)
        if conn is not None:
            return conn
        for text in self._addresses(node):
            try:
                return await self._peers.get(node, parse_address(text))
            except (ValueError, PeerUnavailable):
                continue
        try:
            return await self._peers.get(node)
        except PeerUnavailable:
            return None

    async def known(self, cid: Cid) -> list[Peer]:
        """Reachable holders of ``cid`` from the index, most recently seen first."""
        found = []
        for holder in self._index.sources(cid, self._clock())[: self._max_sources]:
            if holder.node == self._me:
                continue
            conn = await self.connect(holder.node)
            if conn is not None:
                found.append(conn)
        return found

    async def find(self, cid: Cid) -> list[Peer]:
        """Holders from the index, else every connected peer that lists ``cid``."""
        found = await self.known(cid)
        if found:
            return found

        async def ask(conn: Peer) -> None:
            if await self._lists(conn, cid):
                self._index.record(conn.peer, [cid], self._clock())
                found.append(conn)

        async with trio.open_nursery() as nursery:
            for conn in self.connected():
                nursery.start_soon(ask, conn)
        if not found:
            self._no_holder_online(cid)
        return found

    def _no_holder_online(self, cid: Cid) -> None:
        """Holders are known but none answers: say so, not "no known source"."""
        known = [h for h in self._index.sources(cid, self._clock()) if h.node != self._me]
        if known:
            raise ServiceError(
                "unavailable", f"{cid}: every known holder is offline ({len(known)} known)"
            )

    async def _lists(self, conn: Peer, cid: Cid) -> bool:
        try:
            answer: Any = await conn.call(
                "file.list", {"prefix": cid, "limit": 1}, timeout_s=SOURCE_QUERY_TIMEOUT_S
            )
        except (ServiceError, PeerUnavailable):
            return False
        items = answer.get("items") if isinstance(answer, dict) else None
        if not isinstance(items, list) or not items or not isinstance(items[0], dict):
            return False
        return bool(items[0].get("cid") == cid)

    async def tell_fetching(self, cid: Cid) -> None:
        """Tell connected members we are fetching ``cid``: they may draw on us for
        the chunks we already hold, instead of all hitting the origin."""

        async def tell(conn: Peer) -> None:
            with contextlib.suppress(ServiceError, PeerUnavailable):
                await conn.call("file.advertise", {"cids": [cid]}, timeout_s=SOURCE_QUERY_TIMEOUT_S)

        async with trio.open_nursery() as nursery:
            for conn in self.connected():
                if self._member(conn.peer):
                    nursery.start_soon(tell, conn)
