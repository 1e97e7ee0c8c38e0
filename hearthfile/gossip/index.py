"""SourceIndex: which nodes hold which blobs, with freshness (pure).

Fed by file.advertise calls and by gossip; read by the transfer path to pick
sources. Entries expire: a node that stops refreshing what it holds ages out.
Memory is bounded twice over, because every entry comes from a peer: at most
``max_cids_per_source`` CIDs per source node and ``max_entries`` in all; past
either bound the stalest entries of that source (or of all) are dropped.

Every operation costs O(1) per CID it touches, whatever the index holds: the
entries are kept in two age orders (one per source, one overall) as ordered
dicts, so the stalest entry is found and dropped in constant time. (A plain dict
is no good here: dropping its first key again and again makes ``next(iter(d))``
walk the dead slots, O(n) per call.) An entry costs at most
``ENTRY_BYTES_BOUND`` bytes (measured by tests/unit/test_source_index.py), so
the default cap keeps the index under ``MAX_ENTRIES * ENTRY_BYTES_BOUND``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from hearthfile.cids import Cid
from hearthfile.identity import NodeId

DEFAULT_TTL_S: Final = 600.0
DEFAULT_MAX_CIDS_PER_SOURCE: Final = 100_000
#: Upper bound of one entry's memory (its own CID string included), checked by a
#: test (about 460 bytes measured on CPython 3.12).
ENTRY_BYTES_BOUND: Final = 512
#: At most 256 MiB of index whatever peers send.
DEFAULT_MAX_ENTRIES: Final = 512 * 1024


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
        self._by_node: dict[NodeId, OrderedDict[Cid, None]] = {}
        # Every (node, cid) entry, stalest first; also the expiry order (one TTL).
        self._age: OrderedDict[tuple[NodeId, Cid], Source] = OrderedDict()

    def __len__(self) -> int:
        return len(self._age)

    def record(self, node: NodeId, cids: Iterable[Cid], now: float) -> None:
        """``node`` holds ``cids`` as of ``now``."""
        self.expire(now)
        source = Source(node, now, now + self.ttl_s)
        held = self._by_node.get(node)
        for cid in cids:
            if held is None:
                held = self._by_node[node] = OrderedDict()
            self._by_cid.setdefault(cid, {})[node] = source
            held[cid] = None
            held.move_to_end(cid)
            key = (node, cid)
            self._age[key] = source
            self._age.move_to_end(key)
            if len(held) > self.max_cids_per_source:
                self._drop(node, next(iter(held)))
            if len(self._age) > self.max_entries:
                self._drop(*next(iter(self._age)))
            if node not in self._by_node:  # the cap dropped this source's last entry
                held = None

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
        dropped = 0
        while self._age:
            key, source = next(iter(self._age.items()))
            if source.expires_at > now:
                break
            self._drop(*key)
            dropped += 1
        return dropped

    def _drop(self, node: NodeId, cid: Cid) -> None:
        if self._age.pop((node, cid), None) is None:
            return
        holders = self._by_cid[cid]
        del holders[node]
        if not holders:
            del self._by_cid[cid]
        held = self._by_node[node]
        del held[cid]
        if not held:
            del self._by_node[node]
