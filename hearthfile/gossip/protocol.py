"""The gossip dissemination state machine (pure, sans-IO, simulable).

Owns one node's view of the network's signed records, its peers for gossip,
and the exchange logic; returns messages to send and events for the shell.
Signing rules live in gossip/records.py, acceptance rules in
gossip/origins.py, our own signing policy in gossip/publisher.py, and the wire
messages in gossip/messages.py. The trio shell (gossip/service.py) moves time,
connections and bytes in and acts on what comes out.

The problem
-----------
A node wants a blob and must find who holds it without asking everyone.
So every node signs what it holds and the network spreads those statements:
each node ends up with every member's list, checked against the member's key,
and answers "who holds X" from memory (the SourceIndex).

What spreads
------------
Per origin, two kinds of signed record. The *node record* is a heartbeat and
address card, re-signed at least every third of ``record_ttl_s``. The *advert
chain* is a full record (a snapshot of what the origin holds) followed by
records that add and remove CIDs, each naming its predecessor's seq. A node
keeps only the newest node record and the current chain of every origin, so
what it holds is bounded; a node that is behind by any amount is repaired by
sending it the rest of the chain, or the whole chain when it is too far behind
(its seq is not in the chain at all): the snapshot plus the deltas after it.

A round
-------
Anti-entropy by push-pull, in the manner of the epidemic protocols of Demers
et al. (1987) with the per-origin version digests of Scuttlebutt (van Renesse
et al., 2008). Every ``interval_s`` each node sends its digest,
``{origin: (newest advert seq, node seq)}``, to ``fanout`` peers picked at
random among its connections::

    A -> B   Digest   A's versions of every origin
    B -> A   Records  what A lacks (oldest first per origin, at most
                      max_exchange_bytes), and "want": B's versions where A is ahead
    A -> B   Records  what B wants

One exchange moves news both ways, so news reaches every node in O(log n)
rounds: the informed set roughly multiplies each round (push) and the last
uninformed nodes find it quickly, each asking ``fanout`` peers (pull). A node
also pushes its own new records to ``fanout`` peers as soon as it signs them,
which saves the first round. Identical digests cost one comparison.

Why trust any of it
-------------------
Every record is checked against its origin's key (the NodeID is the key), for
freshness, for being newer than what we hold, and against bounds; see
gossip/origins.py for the order and the reasons. Each peer has a byte budget
each way (``max_exchange_bytes`` twice a round, a burst of four), so one peer
cannot make us verify or send without limit. Records of origins that ``admit``
refuses (strangers, under closed membership) are dropped and counted.

Peers and expiry
----------------
A node record heard for the first time, or with new addresses, becomes a
``PeerLearned`` event: the shell may dial it, so nodes learn the network beyond
their bootstrap list. An origin whose newest node record is older than
``record_ttl_s`` is forgotten, with an ``OriginExpired`` event.

Time and randomness are arguments (``now`` in seconds, a ``random.Random``),
so a run is reproducible and a thousand nodes run in one process
(testing/gossip_sim.py).
"""

from __future__ import annotations

import random
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from hearthfile.cids import Cid
from hearthfile.config import GossipConfig
from hearthfile.gossip.messages import MAX_MESSAGE_RECORDS, Digest, Entries, Message, Records
from hearthfile.gossip.origins import Bucket, OriginTable, Retained, Verify, verify_signature
from hearthfile.gossip.publisher import Publisher
from hearthfile.gossip.records import AdvertRecord, NodeRecord, Record, Sign
from hearthfile.identity import NodeId

#: Peers whose byte budgets are remembered (each way); the least recently used
#: beyond it is forgotten. Far above any honest peer count, so only a swarm of
#: fresh keys can make a budget be forgotten, and then one that is likely full.
MAX_SENDER_BUDGETS: Final = 4096

# --- what the core returns ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdvertAccepted:
    """``origin`` signed this change of its holdings. ``full``: ``added`` starts its
    complete set; forget what it held before."""

    origin: NodeId
    seq: int
    added: tuple[Cid, ...]
    removed: tuple[Cid, ...]
    full: bool
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RecordRejected:
    """A record was wrong, not merely late (duplicates and gaps are only counted).
    ``origin`` is None when the whole message was refused."""

    sender: NodeId
    origin: NodeId | None
    reason: str


@dataclass(frozen=True, slots=True)
class PeerLearned:
    """A node we had no record of, or whose addresses changed (and are not none):
    the shell may dial it."""

    node: NodeId
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OriginRefreshed:
    """``origin``'s heartbeat arrived: its holdings are still current. The shell renews
    their freshness (``SourceIndex.record(origin, gossip.holdings(origin), now)``)."""

    origin: NodeId
    seq: int


@dataclass(frozen=True, slots=True)
class OriginExpired:
    """No heartbeat from ``origin`` for ``record_ttl_s``: it no longer counts as a source."""

    origin: NodeId


Event = AdvertAccepted | RecordRejected | PeerLearned | OriginRefreshed | OriginExpired


@dataclass(frozen=True, slots=True)
class Outgoing:
    """Send ``message`` to ``to``: a Digest opens an exchange (the reply comes back
    through ``receive``); Records expect no reply."""

    to: NodeId
    message: Message


@dataclass(frozen=True, slots=True)
class Actions:
    """What the shell must do. ``reply`` is the answer to the Digest just received."""

    outgoing: tuple[Outgoing, ...] = ()
    events: tuple[Event, ...] = ()
    reply: Records | None = None


#: Rejections that happen to honest nodes (races, loss, differing membership):
#: counted, but not reported as RecordRejected events.
QUIET_REASONS = frozenset(
    {"not_newer", "gap", "unknown_origin", "superseded", "stale", "stranger", "too_many_origins"}
)


class Gossip:
    """One node's gossip state machine; see the module docstring."""

    def __init__(
        self,
        me: NodeId,
        cfg: GossipConfig,
        rng: random.Random,
        admit: Callable[[NodeId], bool],
        sign: Sign,
        *,
        verify: Verify = verify_signature,
    ) -> None:
        """``admit(origin)``: accept records whose origin is that node (member or
        trusted, or anyone under open membership). ``sign`` signs bytes with our
        key (``NodeKey.sign``). ``verify`` exists for the simulator's shared cache."""
        self.me = me
        self.cfg = cfg
        self._rng = rng
        self._admit = admit
        self._verify = verify
        self._table = OriginTable(me, cfg, admit, verify)
        self._publisher = Publisher(me, cfg, sign)
        self._peers: dict[NodeId, None] = {}  # insertion-ordered, so sampling is reproducible
        # Byte budgets per peer key, least recently used first (see _budget).
        self._inbound: OrderedDict[NodeId, Bucket] = OrderedDict()
        self._outbound: OrderedDict[NodeId, Bucket] = OrderedDict()
        self._digest = Digest({})
        self._digest_version = -1
        #: Observability: "sent_bytes", "received_bytes", "accepted", "rejected.<reason>".
        self.counters: Counter[str] = Counter()

    # -- the shell's calls ------------------------------------------------------------------

    def publish(
        self,
        added: Iterable[Cid],
        removed: Iterable[Cid],
        now: float,
        addresses: Sequence[str] | None = None,
    ) -> Actions:
        """Our holdings changed (add, put, fetch, unpin + GC, eviction), or our listen
        addresses did. Call once at start with everything held and the addresses."""
        self._publisher.change(added, removed, addresses)
        records = self._sign_due(now, eager=True)
        if not records:
            return Actions()
        peers = self._pick_peers()
        return Actions(outgoing=self._send_all(peers, Records(tuple(records)), now))

    def add_peer(self, node: NodeId, now: float) -> Actions:
        """A connection to ``node`` is up: gossip with it, starting now."""
        if node == self.me:
            return Actions()
        self._peers[node] = None
        return Actions(outgoing=self._send_all([node], self._current_digest(), now))

    def remove_peer(self, node: NodeId) -> None:
        """The connection to ``node`` is gone. Its budgets stay (per key, up to
        ``MAX_SENDER_BUDGETS``): reconnecting must not refill them."""
        self._peers.pop(node, None)

    def tick(self, now: float) -> Actions:
        """Once every ``interval_s``: expire silent origins, sign what is due, and open
        an exchange with ``fanout`` random peers."""
        events = tuple(OriginExpired(o) for o in self._table.expire(_ms(now)))
        self._sign_due(now)
        outgoing = self._send_all(self._pick_peers(), self._current_digest(), now)
        return Actions(outgoing=outgoing, events=events)

    def receive(self, sender: NodeId, message: Message, now: float) -> Actions:
        """A message from ``sender``. A Digest gets ``reply``; Records may trigger a push."""
        self.counters["received_bytes"] += message.wire_bytes
        if isinstance(message, Digest):
            records = self._records_for(sender, message.entries, now)
            room = self.cfg.max_exchange_bytes - sum(r.wire_bytes for r in records)
            reply = Records(tuple(records), self._wants(message.entries, room))
            self.counters["sent_bytes"] += reply.wire_bytes
            return Actions(reply=reply)
        events = self._accept_all(sender, message.records, now)
        outgoing: tuple[Outgoing, ...] = ()
        if message.want:
            push = self._records_for(sender, message.want, now, complete=False)
            if push:
                outgoing = self._send_all([sender], Records(tuple(push)), now, budgeted=False)
        return Actions(outgoing=outgoing, events=tuple(events))

    def reject_message(self, sender: NodeId, reason: str) -> Actions:
        """The shell could not decode a message from ``sender`` (``MessageError.reason``)."""
        self.counters["rejected.malformed"] += 1
        return Actions(events=(RecordRejected(sender, None, f"malformed: {reason}"),))

    # -- queries ----------------------------------------------------------------------------

    def holdings(self, origin: NodeId) -> frozenset[Cid]:
        """What ``origin``'s current chain says it holds (empty if unknown)."""
        state = self._table.get(origin.public_key)
        return frozenset(state.holdings()) if state is not None else frozenset()

    def addresses(self, origin: NodeId) -> tuple[str, ...]:
        state = self._table.get(origin.public_key)
        return state.node.addresses if state is not None else ()

    def versions(self, origin: NodeId) -> tuple[int, int]:
        """(newest advert seq, node record seq) held for ``origin``; (0, 0) if none."""
        return self._table.entries().get(origin.public_key, (0, 0))

    def origins(self) -> list[NodeId]:
        return list(self._table)

    def peers(self) -> list[NodeId]:
        return list(self._peers)

    def retained(self) -> Retained:
        """How much we hold for all origins: what the memory bound limits."""
        return self._table.retained()

    def retained_records(self) -> Iterator[Record]:
        """Every record held for every origin (ours included)."""
        return self._table.records()

    # -- exchange internals ---------------------------------------------------------------------

    def _current_digest(self) -> Digest:
        if self._digest_version != self._table.version:
            self._digest = Digest(dict(self._table.entries()))
            self._digest_version = self._table.version
        return self._digest

    def _pick_peers(self) -> list[NodeId]:
        peers = list(self._peers)
        return self._rng.sample(peers, min(self.cfg.fanout, len(peers)))

    def _send_all(
        self, peers: Iterable[NodeId], message: Message, now: float, *, budgeted: bool = True
    ) -> tuple[Outgoing, ...]:
        out = []
        # Record batches count against each peer's outbound budget (unless the caller
        # charged it already); a digest is bounded by max_origins instead.
        charge = budgeted and isinstance(message, Records)
        for peer in peers:
            if charge and not self._budget(self._outbound, peer).take(_ms(now), message.wire_bytes):
                continue  # this peer had its share; the next exchange carries the news
            self.counters["sent_bytes"] += message.wire_bytes
            out.append(Outgoing(peer, message))
        return tuple(out)

    def _budget(self, table: OrderedDict[NodeId, Bucket], peer: NodeId) -> Bucket:
        bucket = table.get(peer)
        if bucket is None:
            size = self.cfg.max_exchange_bytes
            per_ms = 2 * size / (self.cfg.interval_s * 1000)
            bucket = table[peer] = Bucket(4.0 * size, per_ms, 4.0 * size, 0)
            if len(table) > MAX_SENDER_BUDGETS:
                table.popitem(last=False)  # the least recently used: most likely full again
        table.move_to_end(peer)
        return bucket

    def _records_for(
        self, peer: NodeId, theirs: Entries, now: float, *, complete: bool = True
    ) -> list[Record]:
        """What ``peer`` lacks according to ``theirs``, within our budget for it.
        ``complete``: ``theirs`` is a whole digest, so an origin it omits is one
        the peer lacks; otherwise (a want list) only the origins it names count."""
        mine = self._table.entries()
        if theirs == mine:
            return []
        budget = self._budget(self._outbound, peer)
        budget.take(_ms(now), 0)  # refill to now
        limit = min(self.cfg.max_exchange_bytes, budget.tokens)
        # Set difference of the items runs in C: a thousand-origin digest that differs
        # in a few entries costs microseconds. Sorted, since set order is not reproducible.
        differ = mine.items() - theirs.items()
        behind = sorted(k for k, _ in differ if complete or k in theirs)
        # A random starting point, so a tight budget does not always favour the same origins.
        start = self._rng.randrange(len(behind)) if behind else 0
        records: list[Record] = []
        used = 0
        for origin in behind[start:] + behind[:start]:
            for record in self._lacking(origin, theirs.get(origin, (0, 0))):
                if used + record.wire_bytes > limit or len(records) >= MAX_MESSAGE_RECORDS:
                    break  # the rest of this origin's chain waits for the next round
                records.append(record)
                used += record.wire_bytes
        budget.take(_ms(now), used)
        return records

    def _lacking(self, key: bytes, versions: tuple[int, int]) -> list[Record]:
        state = self._table.get(key)
        if state is None:
            return []
        advert_seq, node_seq = versions
        node: list[Record] = [state.node] if state.node.seq > node_seq else []
        return node + list(state.records_after(advert_seq))

    def _wants(self, theirs: Entries, room_bytes: int) -> dict[bytes, tuple[int, int]]:
        """Our versions of the origins where the peer is ahead of us: origins we admit,
        and have room for, as many as fit in ``room_bytes`` of the reply."""
        mine = self._table.entries()
        if theirs == mine:
            return {}
        wants: dict[bytes, tuple[int, int]] = {}
        room = room_bytes // _WANT_ENTRY_BYTES
        for origin, (advert_seq, node_seq) in sorted(theirs.items() - mine.items()):
            if len(wants) >= room:
                break  # the rest next round; the reply must stay within one message
            have = mine.get(origin)
            if have is None and not self._wants_origin(origin):
                continue
            have = have or (0, 0)
            if advert_seq > have[0] or node_seq > have[1]:
                wants[origin] = have
        return wants

    def _wants_origin(self, key: bytes) -> bool:
        """Would we take records from this origin we do not know yet?"""
        if len(self._table) >= self.cfg.max_origins:
            return False
        try:
            return self._admit(NodeId(key))
        except ValueError:  # not a key at all
            return False

    # -- accepting records ----------------------------------------------------------------------

    def _accept_all(self, sender: NodeId, records: Sequence[Record], now: float) -> list[Event]:
        now_ms = _ms(now)
        budget = self._budget(self._inbound, sender)
        # Node records first (adverts need a live one), then each chain in seq order: the
        # outcome does not depend on the order the sender chose.
        ordered = sorted(records, key=_apply_order)
        have = self._table.entries()
        events: list[Event] = []
        for i, record in enumerate(ordered):
            if not budget.take(now_ms, record.wire_bytes):
                self.counters["rejected.sender_budget"] += len(ordered) - i
                events.append(RecordRejected(sender, None, "sender_budget"))
                break
            # Duplicates are the common case once a network has converged: skip them
            # before any other work (the same verdict the full rules would reach).
            versions = have.get(record.origin.public_key)
            if versions is not None and record.seq <= versions[isinstance(record, NodeRecord)]:
                self.counters["rejected.not_newer"] += 1
                continue
            events.extend(self._accept(sender, record, now_ms))
        return events

    def _accept(self, sender: NodeId, record: Record, now_ms: int) -> list[Event]:
        origin = record.origin
        if origin == self.me:
            if self._verify(record):
                self._publisher.observe(record)
            else:
                self.counters["rejected.bad_signature"] += 1
            return []
        old_addresses = None
        if isinstance(record, NodeRecord):
            before = self._table.get(origin.public_key)
            old_addresses = before.node.addresses if before is not None else None
        reason = self._table.offer(record, now_ms)
        if reason is not None:
            self.counters[f"rejected.{reason}"] += 1
            if reason in QUIET_REASONS:
                return []
            return [RecordRejected(sender, origin, reason)]
        self.counters["accepted"] += 1
        if isinstance(record, AdvertRecord):
            r = record
            return [AdvertAccepted(origin, r.seq, r.added, r.removed, r.full, r.addresses)]
        events: list[Event] = []
        if record.addresses and record.addresses != old_addresses:
            events.append(PeerLearned(origin, record.addresses))
        events.append(OriginRefreshed(origin, record.seq))
        return events

    def _sign_due(self, now: float, *, eager: bool = False) -> list[Record]:
        records = self._publisher.due(_ms(now), eager=eager)
        for record in records:
            self._table.put_own(record)
        return records


#: Most bytes one want entry takes on the wire (a digest entry with 9-byte ints).
_WANT_ENTRY_BYTES = 1 + 34 + 9 + 9


def _apply_order(record: Record) -> tuple[int, bytes, int]:
    return (isinstance(record, AdvertRecord), record.origin.public_key, record.seq)


def _ms(now: float) -> int:
    return int(now * 1000)
