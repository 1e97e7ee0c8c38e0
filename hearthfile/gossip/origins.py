"""Per-origin gossip state and the rules for accepting a record (pure).

Owns, for every origin a node hears of, the newest node record and the
retained advert chain (the latest full record and every record after it), and
decides whether one more record is accepted. gossip/protocol.py moves records
between peers; this module only judges and stores them. The rules, in the
order they are applied (cheap checks first, the signature late, so replays
and duplicates cost no Ed25519 work and forgeries cannot spend an honest
origin's rate budget):

advert record
    stranger (origin not admitted), future (timestamp beyond
    ``max_clock_skew_s``), oversize (more CIDs than ``max_cids_per_record``),
    unknown_origin (no live node record yet: a chain is believed only while
    its origin's heartbeat is fresh), not_newer (seq not above the newest we
    hold), superseded (older than the node record's ``snapshot_seq``: an old
    chain replayed), gap (a delta whose ``prev`` is not our newest: we need
    the snapshot first), bad_order (timestamp before its predecessor's),
    chain_full (``max_records_per_origin`` retained: an honest origin starts a
    new snapshot first), table_full (``MAX_RETAINED_CIDS`` held across all
    origins), bad_signature, rate_limited.
node record
    stranger, future, stale (older than ``record_ttl_s``), not_newer,
    too_many_origins (``max_origins`` reached), bad_signature, rate_limited.

Advert records carry no staleness rule of their own: a quiet node's snapshot
may be days old and still current. What keeps an old chain from being
replayed is the fresh node record: adverts are accepted only while it is
fresher than ``record_ttl_s``, and only from its ``snapshot_seq`` on.

The rate limit is a token bucket per origin that runs on the records' own
timestamps, not on arrival times: a node catching up after a partition
receives a whole chain at once, and must accept what its origin produced at an
honest pace. Timestamps cannot run ahead of our clock by more than the skew,
so a flooding origin gains at most ``max_clock_skew_s`` worth of tokens.

Memory per origin is bounded by ``max_records_per_origin`` advert records of at
most ``max_cids_per_record`` CIDs each, plus one node record; the number of
origins by ``max_origins``. Those bounds multiply to far more than a node can
hold, so the CIDs in all retained chains together are bounded too, by
``MAX_RETAINED_CIDS``: an advert that would pass it is refused ``table_full``
(our own are always kept). At about ``CID_BYTES_BOUND`` bytes per retained CID
(a test measures it), the tables stay under 256 MiB.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

from hearthfile.cids import Cid
from hearthfile.config import GossipConfig
from hearthfile.gossip.messages import Versions
from hearthfile.gossip.records import AdvertRecord, NodeRecord, Record
from hearthfile.identity import NodeId

#: Every reason a record can be rejected for (counters use them as keys).
REJECT_REASONS: Final = frozenset(
    {
        "stranger", "oversize", "future", "stale", "unknown_origin", "not_newer",
        "superseded", "gap", "bad_order", "chain_full", "too_many_origins",
        "bad_signature", "rate_limited", "sender_budget", "malformed", "table_full",
    }
)  # fmt: skip
#: CIDs held in all origins' advert chains together, at most.
MAX_RETAINED_CIDS: Final = 1 << 20
#: Upper bound of one retained CID's memory (its string, its record's share), tested.
CID_BYTES_BOUND: Final = 256

#: Checks a record's signature; the default is ``record.verify()``.
Verify = Callable[[Record], bool]


def verify_signature(record: Record) -> bool:
    return record.verify()


@dataclass(slots=True)
class Bucket:
    """A token bucket: ``capacity`` tokens, refilled at ``per_ms`` tokens a millisecond."""

    capacity: float
    per_ms: float
    tokens: float
    at_ms: int

    def take(self, at_ms: int, amount: float = 1.0) -> bool:
        """Refill up to ``at_ms`` (time never runs backwards here) and spend ``amount``."""
        if at_ms > self.at_ms:
            self.tokens = min(self.capacity, self.tokens + (at_ms - self.at_ms) * self.per_ms)
            self.at_ms = at_ms
        if self.tokens < amount:
            return False
        self.tokens -= amount
        return True


@dataclass(slots=True)
class OriginState:
    """What we hold from one origin: its node record and its current advert chain."""

    node: NodeRecord
    bucket: Bucket
    chain: list[AdvertRecord] = field(default_factory=list)
    #: ``chain``'s seqs, for bisecting a peer's position in it.
    seqs: list[int] = field(default_factory=list)
    #: CIDs named in ``chain`` (added and removed).
    cids: int = 0

    @property
    def advert_seq(self) -> int:
        return self.seqs[-1] if self.seqs else 0

    @property
    def versions(self) -> Versions:
        return (self.advert_seq, self.node.seq)

    def records_after(self, advert_seq: int) -> Sequence[AdvertRecord]:
        """What a node at ``advert_seq`` lacks: the rest of the chain if that seq is
        in it, else the whole chain (it is too far behind, or on an older chain)."""
        i = bisect_left(self.seqs, advert_seq)
        if i < len(self.seqs) and self.seqs[i] == advert_seq:
            return self.chain[i + 1 :]
        return self.chain if advert_seq < self.advert_seq else ()

    def holdings(self) -> set[Cid]:
        held: set[Cid] = set()
        for record in self.chain:
            held.difference_update(record.removed)
            held.update(record.added)
        return held

    def append(self, record: AdvertRecord) -> int:
        """Add ``record`` to the chain; how many CIDs the chain gained (or lost)."""
        before = self.cids
        if record.full:
            self.chain.clear()
            self.seqs.clear()
            self.cids = 0
        self.chain.append(record)
        self.seqs.append(record.seq)
        self.cids += _cids_in(record)
        return self.cids - before


def _cids_in(record: AdvertRecord) -> int:
    return len(record.added) + len(record.removed)


@dataclass(frozen=True, slots=True)
class Retained:
    """How much one node holds: origins, records (node and advert), CIDs in them,
    and the longest advert chain of any origin."""

    origins: int
    records: int
    cids: int
    longest_chain: int


class OriginTable:
    """Every origin's state, bounded, and the acceptance rules of the module docstring."""

    def __init__(
        self,
        me: NodeId,
        cfg: GossipConfig,
        admit: Callable[[NodeId], bool],
        verify: Verify = verify_signature,
    ) -> None:
        self._me = me
        self._cfg = cfg
        self._admit = admit
        self._verify = verify
        self._bucket_per_ms = cfg.origin_records_per_round / (cfg.interval_s * 1000)
        self._ttl_ms = round(cfg.record_ttl_s * 1000)
        self._skew_ms = round(cfg.max_clock_skew_s * 1000)
        # Keyed by public key bytes, not NodeId: see messages.Entries.
        self._states: dict[bytes, OriginState] = {}
        self._entries: dict[bytes, Versions] = {}
        #: CIDs in every retained chain (at most MAX_RETAINED_CIDS but for our own).
        self.cids = 0
        #: Bumped on every change, so a digest of the entries can be reused until then.
        self.version = 0

    def __len__(self) -> int:
        return len(self._states)

    def __iter__(self) -> Iterator[NodeId]:
        return (state.node.origin for state in self._states.values())

    def get(self, key: bytes) -> OriginState | None:
        """The state of the origin whose public key is ``key``."""
        return self._states.get(key)

    def entries(self) -> dict[bytes, Versions]:
        """Live ``{origin: (advert seq, node seq)}``; callers copy it before sharing."""
        return self._entries

    def offer(self, record: Record, now_ms: int) -> str | None:
        """Accept ``record`` (None) or say why not (one of ``REJECT_REASONS``)."""
        if not self._admit(record.origin):
            return "stranger"
        if record.timestamp_ms > now_ms + self._skew_ms:
            return "future"
        if isinstance(record, NodeRecord):
            return self._offer_node(record, now_ms)
        return self._offer_advert(record)

    def put_own(self, record: Record) -> None:
        """Store one of our own records, newly signed: no checks, no rate limit."""
        key = record.origin.public_key
        state = self._states.get(key)
        if isinstance(record, NodeRecord):
            if state is None:
                self._states[key] = OriginState(record, self._new_bucket(record))
            else:
                state.node = record
        elif state is not None:
            self.cids += state.append(record)
        else:
            raise ValueError("our node record must be stored before our adverts")
        self._touch(key)

    def expire(self, now_ms: int) -> list[NodeId]:
        """Forget origins whose node record is older than the ttl; returns them."""
        horizon = now_ms - self._ttl_ms
        me = self._me.public_key
        dead = [k for k, s in self._states.items() if s.node.timestamp_ms < horizon and k != me]
        origins = [self._states[k].node.origin for k in dead]
        for key in dead:
            self.cids -= self._states.pop(key).cids
            del self._entries[key]
        self.version += bool(dead)
        return origins

    def retained(self) -> Retained:
        """What the memory bound counts, across all origins."""
        records = cids = longest = 0
        for state in self._states.values():
            records += 1 + len(state.chain)
            cids += sum(len(r.added) + len(r.removed) for r in state.chain)
            longest = max(longest, len(state.chain))
        return Retained(len(self._states), records, cids, longest)

    def records(self) -> Iterator[Record]:
        """Every record held, node records and chains alike."""
        for state in self._states.values():
            yield state.node
            yield from state.chain

    # -- the rules ------------------------------------------------------------------------

    def _offer_node(self, record: NodeRecord, now_ms: int) -> str | None:
        if record.timestamp_ms < now_ms - self._ttl_ms:
            return "stale"
        key = record.origin.public_key
        state = self._states.get(key)
        if state is not None and record.seq <= state.node.seq:
            return "not_newer"
        if state is None and len(self._states) >= self._cfg.max_origins:
            return "too_many_origins"
        if not self._verify(record):
            return "bad_signature"
        if state is None:
            state = OriginState(record, self._new_bucket(record))
            self._states[key] = state
        if not state.bucket.take(record.timestamp_ms):
            return "rate_limited"
        state.node = record
        self._touch(key)
        return None

    def _offer_advert(self, record: AdvertRecord) -> str | None:
        if len(record.added) + len(record.removed) > self._cfg.max_cids_per_record:
            return "oversize"
        key = record.origin.public_key
        state = self._states.get(key)
        if state is None:
            return "unknown_origin"
        problem = self._chain_problem(state, record)
        if problem is not None:
            return problem
        gain = _cids_in(record) - (state.cids if record.full else 0)
        if self.cids + gain > MAX_RETAINED_CIDS:
            return "table_full"
        if not self._verify(record):
            return "bad_signature"
        if not state.bucket.take(record.timestamp_ms):
            return "rate_limited"
        self.cids += state.append(record)
        self._touch(key)
        return None

    def _chain_problem(self, state: OriginState, record: AdvertRecord) -> str | None:
        if record.seq <= state.advert_seq:
            return "not_newer"
        if record.seq < state.node.snapshot_seq:
            return "superseded"
        if record.full:
            return None
        if record.prev != state.advert_seq:
            return "gap"
        if record.timestamp_ms < state.chain[-1].timestamp_ms:
            return "bad_order"
        if len(state.chain) >= self._cfg.max_records_per_origin:
            return "chain_full"
        return None

    def _new_bucket(self, record: Record) -> Bucket:
        capacity = float(self._cfg.max_records_per_origin)
        return Bucket(capacity, self._bucket_per_ms, capacity, record.timestamp_ms)

    def _touch(self, key: bytes) -> None:
        self._entries[key] = self._states[key].versions
        self.version += 1
