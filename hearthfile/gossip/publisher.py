"""Our own gossip records: when to sign what (pure).

Owns this node's side of the advert chain: the CIDs it holds, what its chain
has told the network so far, the changes not yet told, its seq counter and
its heartbeat. gossip/protocol.py stores and spreads what this module signs.

Policy
------
- Changes are coalesced: ``change`` only notes them; ``due`` signs one batch
  of delta records for everything noted since the last batch (a CID added and
  removed in between costs nothing). A change is signed at once (``eager``,
  from ``publish``) unless a batch went out less than ``interval_s`` ago; then
  it waits for the next round's ``due``, so a burst of a thousand adds
  costs two or three records, not a thousand. Each record spends a token from
  the same bucket receivers apply to us (gossip/origins.py), so an honest node
  never trips their rate limit; what does not fit waits for a later ``due``.
- A new snapshot (a full record, then add-only records if the set needs more
  than ``max_cids_per_record``) replaces the chain at start, when the deltas
  would push the chain past ``max_records_per_origin``, when the deltas since
  the last snapshot mention more CIDs than a snapshot would (catching a node
  up from scratch then costs at most about twice the snapshot), and after we
  see a record of ours newer than our counter (a previous run of this node
  whose clock was ahead, see gossip/records.py "Sequence numbers").
- A snapshot uses at most half of ``max_records_per_origin`` records, leaving
  the other half for deltas before the next one. A node holding more than
  ``(max_records_per_origin // 2) * max_cids_per_record`` CIDs (32,768 with
  the defaults) advertises the most recently added ones; peers find the others
  through ``file.list`` (DESIGN.md section 7).
- A node record is signed at start, when the addresses change, after a new
  snapshot (it carries ``snapshot_seq``) and whenever the last one is a third of
  ``record_ttl_s`` old: a node that keeps running never ages out of its peers'
  tables, even when nothing changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import islice

from hearthfile.cids import Cid
from hearthfile.config import GossipConfig
from hearthfile.gossip.origins import Bucket
from hearthfile.gossip.records import (
    AdvertRecord,
    Record,
    Sign,
    next_seq,
    sign_advert,
    sign_node,
)
from hearthfile.identity import NodeId


class Publisher:
    """Signs our adverts and heartbeats when due; holds no key, only ``sign``."""

    def __init__(self, me: NodeId, cfg: GossipConfig, sign: Sign) -> None:
        self._me = me
        self._cfg = cfg
        self._sign = sign
        self._held: dict[Cid, None] = {}  # a dict for its order: oldest first
        self._told: set[Cid] = set()  # what our current chain describes
        self._pending: dict[Cid, bool] = {}  # noted changes; True means added
        self._addresses: tuple[str, ...] = ()
        self._started = False
        self._need_snapshot = True
        self._need_node = True
        self._last_seq = 0
        self._last_ms = 0
        self._head_seq = 0  # newest advert seq of our chain
        self._snapshot_seq = 0
        self._chain_records = 0
        self._delta_cids = 0  # CIDs mentioned by the deltas since the snapshot
        self._node_ms = 0  # timestamp of our newest node record
        self._advert_ms = -(2**62)  # when we last signed adverts
        capacity = float(cfg.max_records_per_origin)
        per_ms = cfg.origin_records_per_round / (cfg.interval_s * 1000)
        self._bucket = Bucket(capacity, per_ms, capacity, 0)

    @property
    def held(self) -> int:
        return len(self._held)

    def change(
        self, added: Iterable[Cid], removed: Iterable[Cid], addresses: Sequence[str] | None
    ) -> None:
        """Note a change of what we hold (and of where we listen, if given)."""
        self._started = True
        for cid in added:
            self._held[cid] = None
            self._pending[cid] = True
        for cid in removed:
            self._held.pop(cid, None)
            self._pending[cid] = False
        if addresses is not None and tuple(addresses) != self._addresses:
            self._addresses = tuple(addresses)
            self._need_node = True

    def observe(self, record: Record) -> None:
        """A verified record of ours came back from the network."""
        if record.seq > self._last_seq:
            # A previous run of this node got further: go past it and restate everything.
            self._last_seq = record.seq
            self._need_snapshot = True
            self._need_node = True

    def due(self, now_ms: int, *, eager: bool = False) -> list[Record]:
        """Records to sign now, node record first (receivers need it before adverts).
        ``eager``: called for a fresh change, which waits if a batch just went out."""
        if not self._started:
            return []
        recent = now_ms - self._advert_ms < self._cfg.interval_s * 1000
        adverts = [] if eager and recent and not self._need_snapshot else self._adverts(now_ms)
        if adverts:
            self._advert_ms = now_ms
        refresh_ms = self._cfg.record_ttl_s * 1000 / 3
        if not (self._need_node or now_ms - self._node_ms >= refresh_ms):
            return list(adverts)
        if not self._bucket.take(now_ms):
            return list(adverts)
        self._need_node = False
        self._node_ms = self._stamp(now_ms)
        node = sign_node(
            self._sign,
            self._me,
            seq=self._seq(now_ms),
            timestamp_ms=self._node_ms,
            addresses=self._addresses,
            snapshot_seq=self._snapshot_seq,
        )
        return [node, *adverts]

    # -- adverts ------------------------------------------------------------------------

    def _adverts(self, now_ms: int) -> list[AdvertRecord]:
        if self._need_snapshot:
            return self._snapshot(now_ms)
        added = [c for c, add in self._pending.items() if add and c not in self._told]
        removed = [c for c, add in self._pending.items() if not add and c in self._told]
        if not added and not removed:
            self._pending.clear()
            return []
        cap = self._cfg.max_cids_per_record
        count = -(-(len(added) + len(removed)) // cap)
        too_long = self._chain_records + count > self._cfg.max_records_per_origin
        after = len(self._told) + len(added) - len(removed)
        too_heavy = self._delta_cids + len(added) + len(removed) > max(after, cap)
        if too_long or too_heavy:
            return self._snapshot(now_ms)
        if not self._bucket.take(now_ms, count):
            return []
        changes = [(c, True) for c in added] + [(c, False) for c in removed]
        records = [self._delta(now_ms, changes[i : i + cap]) for i in range(0, len(changes), cap)]
        self._told.update(added)
        self._told.difference_update(removed)
        self._pending.clear()
        self._delta_cids += len(changes)
        return records

    def _snapshot(self, now_ms: int) -> list[AdvertRecord]:
        cap = self._cfg.max_cids_per_record
        limit = (self._cfg.max_records_per_origin // 2) * cap
        # The newest ``limit`` CIDs: dict order is insertion order, oldest first.
        newest = list(islice(reversed(self._held), limit))
        parts = [newest[i : i + cap] for i in range(0, len(newest), cap)] or [[]]
        if not self._bucket.take(now_ms, len(parts)):
            return []
        first = sign_advert(
            self._sign, self._me, seq=self._seq(now_ms), prev=0,
            timestamp_ms=self._stamp(now_ms), addresses=self._addresses,
            added=parts[0], full=True,
        )  # fmt: skip
        self._snapshot_seq = self._head_seq = first.seq
        self._chain_records = 1
        records = [first]
        for part in parts[1:]:
            records.append(self._delta(now_ms, [(c, True) for c in part]))
        self._told = set(newest)
        self._pending.clear()
        self._delta_cids = 0
        self._need_snapshot = False
        self._need_node = True  # announce the new snapshot_seq
        return records

    def _delta(self, now_ms: int, changes: list[tuple[Cid, bool]]) -> AdvertRecord:
        record = sign_advert(
            self._sign,
            self._me,
            seq=self._seq(now_ms),
            prev=self._head_seq,
            timestamp_ms=self._stamp(now_ms),
            addresses=self._addresses,
            added=[c for c, add in changes if add],
            removed=[c for c, add in changes if not add],
        )
        self._head_seq = record.seq
        self._chain_records += 1
        return record

    def _seq(self, now_ms: int) -> int:
        self._last_seq = next_seq(self._last_seq, now_ms)
        return self._last_seq

    def _stamp(self, now_ms: int) -> int:
        # Never decreasing along our records, even if the clock steps back.
        self._last_ms = max(self._last_ms, now_ms)
        return self._last_ms
