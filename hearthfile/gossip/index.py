"""SourceIndex: which nodes hold which blobs, with freshness (pure).

Fed by file.advertise calls and by gossip; read by the transfer path to pick
sources. Entries expire: a node that stops refreshing what it holds ages out.
Memory is bounded twice over, because every entry comes from a peer: at most
``max_cids_per_source`` CIDs per source node and ``max_entries`` in all; past
either bound the stalest entries of that source (or of all) are dropped. An
entry costs about 250 bytes (a 71-character CID string shared between the two
maps, a NodeId, two floats and dict overhead), so the default 1,000,000-entry
cap keeps the index near 250 MB in the worst case and far less in practice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from hearthfile.cids import Cid
from hearthfile.identity import NodeId

DEFAULT_TTL_S: Final = 600.0
DEFAULT_MAX_CIDS_PER_SOURCE: Final = 100_000
DEFAULT_MAX_ENTRIES: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class Source:
    node: NodeId
    seen_at: float
    expires_at: float


class SourceIndex:
    def __init__(
        self,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        max_cids_per_source: int = DEFAULT_MAX_CIDS_PER_SOURCE,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_cids_per_source = max_cids_per_source
        self.max_entries = max_entries
        self._by_cid: dict[Cid, dict[NodeId, Source]] = {}
        self._by_node: dict[NodeId, dict[Cid, float]] = {}
        self._entries = 0

    def __len__(self) -> int:
        return self._entries

    def record(self, node: NodeId, cids: Iterable[Cid], now: float) -> None:
        """``node`` holds ``cids`` as of ``now``."""
        held = self._by_node.setdefault(node, {})
        source = Source(node, now, now + self.ttl_s)
        for cid in cids:
            holders = self._by_cid.setdefault(cid, {})
            if node not in holders:
                self._entries += 1
            holders[node] = source
            held.pop(cid, None)
            held[cid] = now  # re-insert: dict order is age order
        self._trim(node)

    def withdraw(self, node: NodeId, cids: Iterable[Cid]) -> None:
        for cid in cids:
            self._drop(node, cid)

    def forget_node(self, node: NodeId) -> None:
        for cid in list(self._by_node.get(node, ())):
            self._drop(node, cid)

    def sources(self, cid: Cid, now: float) -> list[Source]:
        """Live sources of ``cid``, freshest first."""
        holders = self._by_cid.get(cid, {})
        live = [s for s in holders.values() if s.expires_at > now]
        return sorted(live, key=lambda s: s.seen_at, reverse=True)

    def expire(self, now: float) -> int:
        """Drop every entry past its expiry; returns how many."""
        dead = [
            (s.node, cid)
            for cid, holders in self._by_cid.items()
            for s in holders.values()
            if s.expires_at <= now
        ]
        for node, cid in dead:
            self._drop(node, cid)
        return len(dead)

    def _trim(self, node: NodeId) -> None:
        held = self._by_node[node]
        while len(held) > self.max_cids_per_source:
            self._drop(node, next(iter(held)))
        while self._entries > self.max_entries:
            oldest_node = min(self._by_node, key=lambda n: next(iter(self._by_node[n].values())))
            self._drop(oldest_node, next(iter(self._by_node[oldest_node])))

    def _drop(self, node: NodeId, cid: Cid) -> None:
        holders = self._by_cid.get(cid)
        if holders is None or holders.pop(node, None) is None:
            return
        self._entries -= 1
        if not holders:
            del self._by_cid[cid]
        held = self._by_node.get(node)
        if held is not None:
            held.pop(cid, None)
            if not held:
                del self._by_node[node]
