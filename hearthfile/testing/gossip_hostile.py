"""Hostile members for the gossip simulator (pure).

Owns the attacks testing/gossip_sim.py runs against honest nodes. A hostile node is an
admitted member with a valid key; it relays nothing honest and, every round,
sends each of a few peers:

- forged records: copies of honest records with a random signature, and node
  records that name an honest node as origin but are signed with its own key;
- tampered records: honest records with one field changed (a CID added, the
  seq or timestamp moved, the addresses replaced), the signature kept;
- replays: honest records it saw earlier, sent again unchanged;
- a flood of its own validly signed records: twenty deltas and a node record
  per message (the rate limit's business), an oversize record (one CID more
  than ``max_cids_per_record``), node records stamped far in the future and
  two ttls in the past;
- a digest claiming it holds nothing, to pull everything (the byte budget's
  business), and a want list asking for everything in its replies;
- a record that does not decode (a bad address), alone in its message.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import replace

from hearthfile.cids import Cid, cid_of
from hearthfile.config import GossipConfig
from hearthfile.gossip.messages import Digest, Message, Records
from hearthfile.gossip.protocol import Actions, Outgoing
from hearthfile.gossip.records import (
    AdvertRecord,
    NodeRecord,
    Record,
    Sign,
    sign_advert,
    sign_node,
)
from hearthfile.identity import NodeId

EVIL_ADDRESS = "10.6.6.6:666"


class Hostile:
    """A member that attacks instead of gossiping; same calls as the shell makes on Gossip."""

    def __init__(
        self,
        me: NodeId,
        sign: Sign,
        cfg: GossipConfig,
        rng: random.Random,
        victims: list[NodeId],
    ) -> None:
        """``victims``: the honest nodes, a list the simulator fills and keeps current."""
        self.me = me
        self._sign = sign
        self._cfg = cfg
        self._rng = rng
        self._victims = victims
        self._peers: list[NodeId] = []
        self._seen: deque[Record] = deque(maxlen=256)
        self._seq = 0
        self._head = 0
        self._oversize: AdvertRecord | None = None

    def peers(self) -> list[NodeId]:
        return list(self._peers)

    def add_peer(self, node: NodeId, now: float) -> Actions:
        self._peers.append(node)
        return Actions()

    def tick(self, now: float) -> Actions:
        targets = self._rng.sample(self._peers, min(self._cfg.fanout, len(self._peers)))
        nothing = Digest({o.public_key: (0, 0) for o in self._victims})
        out = [Outgoing(p, Records(tuple(self._attack(now)))) for p in targets]
        out += [Outgoing(p, nothing) for p in targets]
        if targets and self._victims:
            out.append(Outgoing(targets[0], Records((self._malformed(now),))))
        return Actions(outgoing=tuple(out))

    def receive(self, sender: NodeId, message: Message, now: float) -> Actions:
        if isinstance(message, Records):
            self._seen.extend(message.records)
            return Actions()
        want_all = dict.fromkeys(message.entries, (0, 0))
        return Actions(reply=Records(tuple(self._attack(now)), want_all))

    def _attack(self, now: float) -> list[Record]:
        records = self._flood(now)
        honest = [r for r in self._seen if r.origin != self.me]
        for old in self._rng.sample(honest, min(6, len(honest))):
            records.append(old)  # a replay, unchanged
            records.append(_tamper(old, self._rng))
            records.append(replace(old, signature=self._rng.randbytes(64)))
        if self._victims:
            records.append(self._claim(self._rng.choice(self._victims), now))
        return records

    def _flood(self, now: float) -> list[Record]:
        """Our own validly signed records: far too many, too large, from the future."""
        ms = int(now * 1000)
        self._seq = max(self._seq + 1, ms)
        records: list[Record] = [self._node(self._seq, ms, (EVIL_ADDRESS,))]
        for i in range(20):
            self._seq += 1
            full = self._head == 0 or (i == 0 and self._rng.random() < 0.2)
            records.append(self._advert(ms, full, [cid_of(f"{self._seq}/{i}".encode())]))
        if self._oversize is None:  # built once: a thousand hashes a round would be slow
            self._seq += 1
            size = self._cfg.max_cids_per_record + 1
            self._oversize = self._advert(ms, False, [cid_of(f"{self._seq}/{i}".encode())
                                                      for i in range(size)])  # fmt: skip
        records.append(self._oversize)
        self._seq += 1
        records.append(self._node(self._seq, ms + 10**9, ()))  # eleven days ahead
        self._seq += 1
        stale_ms = ms - 2 * int(self._cfg.record_ttl_s * 1000)
        records.append(self._node(self._seq, stale_ms, ()))  # long dead
        return records

    def _node(self, seq: int, ms: int, addresses: tuple[str, ...]) -> NodeRecord:
        return sign_node(
            self._sign, self.me, seq=seq, timestamp_ms=ms, addresses=addresses, snapshot_seq=0
        )

    def _advert(self, ms: int, full: bool, cids: list[Cid]) -> AdvertRecord:
        record = sign_advert(
            self._sign, self.me, seq=self._seq, prev=0 if full else self._head,
            timestamp_ms=ms, addresses=(), added=cids, full=full,
        )  # fmt: skip
        self._head = record.seq
        return record

    def _claim(self, victim: NodeId, now: float) -> Record:
        """A node record naming ``victim`` as its origin, signed with our key."""
        ms = int(now * 1000)
        return sign_node(
            self._sign, victim, seq=ms + 5, timestamp_ms=ms, addresses=(EVIL_ADDRESS,),
            snapshot_seq=0,
        )  # fmt: skip

    def _malformed(self, now: float) -> Record:
        """Undecodable on the wire (a bad address); without the wire, a bad signature."""
        ms = int(now * 1000)
        victim = self._rng.choice(self._victims)
        return NodeRecord(victim, ms, ms, ("not an address",), 0, self._rng.randbytes(64))


def _tamper(record: Record, rng: random.Random) -> Record:
    """A copy with one field changed and the old signature kept."""
    if isinstance(record, NodeRecord):
        return replace(record, addresses=(EVIL_ADDRESS,), seq=record.seq + rng.randint(1, 9))
    if rng.random() < 0.5:
        evil = cid_of(rng.randbytes(8))
        return replace(record, added=tuple(sorted({*record.added, evil})))
    return replace(record, seq=record.seq + 1, timestamp_ms=record.timestamp_ms + 1)
