"""A deterministic in-process gossip network of many nodes (pure).

Owns nothing the daemon runs: it plays the trio shell for N ``Gossip`` cores at
once, so the dissemination logic can be measured at a thousand nodes in one
process. Used by tests/unit/test_gossip_sim.py and scripts/sim_gossip.py.

Model
-----
Time moves in rounds of ``interval_s``; within a round every node ticks once,
in a random order, and messages go through one queue. Each message is lost
with probability ``loss``, held back 0..``max_delay_rounds`` rounds, and lost
when it crosses a partition. An exchange whose messages are not held back
completes within its round. Each node dials ``bootstrap_peers`` random others;
a ``PeerLearned`` event makes it dial that node too while it has fewer than
``target_peers`` connections (the shell's policy, modelled). Node starts are
spread over a heartbeat period, as in a network that was not switched on at
once. Everything random comes from one ``random.Random(seed)``: a run is
reproducible, so round counts can be asserted on.

Hostile nodes (testing/gossip_hostile.py) are admitted members that attack
instead of relaying.

Audit
-----
Every payload each key signs is recorded. After every round, every record an
honest node retains must be one its origin signed, and every node record must
be fresh; advert and node seqs accepted from an origin must strictly increase
(a replay would repeat or go back); and each honest node's retained state must
stay within ``MemoryBound``. Violations are collected, not raised, so a
caller sees them all.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, cast

from hearthfile.cids import CanonicalValue, Cid, canonical_decode, canonical_encode, cid_of
from hearthfile.config import GossipConfig
from hearthfile.gossip.messages import (
    Message,
    MessageError,
    decode_message,
    encode_message,
)
from hearthfile.gossip.origins import Retained
from hearthfile.gossip.protocol import (
    Actions,
    AdvertAccepted,
    Event,
    Gossip,
    OriginExpired,
    OriginRefreshed,
    Outgoing,
    PeerLearned,
)
from hearthfile.gossip.records import (
    NodeRecord,
    Record,
    Sign,
)
from hearthfile.identity import NodeId, NodeKey
from hearthfile.limits import MAX_RECORD_CIDS
from hearthfile.testing.gossip_hostile import Hostile

#: Simulated wall clock at round 0 (seconds); any fixed value works.
EPOCH_S: Final = 1_700_000_000.0


@dataclass(frozen=True, slots=True)
class SimConfig:
    nodes: int = 100
    seed: int = 1
    gossip: GossipConfig = field(default_factory=GossipConfig)
    bootstrap_peers: int = 3
    target_peers: int = 8
    loss: float = 0.0
    max_delay_rounds: int = 0
    #: How many of ``nodes`` are hostile.
    hostile: int = 0
    #: Pass every message through its msgpack bytes and back (slower; tests the codec).
    wire: bool = False
    #: CIDs each node holds at the start.
    cids_per_node: int = 4
    audit: bool = True


@dataclass(frozen=True, slots=True)
class MemoryBound:
    """Most state one node may retain: ``max_origins`` (or every node, if fewer)
    origins, each with one node record and ``max_records_per_origin`` adverts."""

    origins: int
    records: int
    cids: int

    @classmethod
    def of(cls, cfg: GossipConfig, nodes: int) -> MemoryBound:
        origins = min(cfg.max_origins, nodes)
        return cls(
            origins,
            origins * (cfg.max_records_per_origin + 1),
            origins * cfg.max_records_per_origin * cfg.max_cids_per_record,
        )


class _VerifyCache:
    """Ed25519 verification shared by all nodes: each distinct (key, bytes, signature)
    is really verified once, then remembered. Forged records are verified too."""

    def __init__(self) -> None:
        self._known: dict[tuple[bytes, bytes, bytes], bool] = {}

    def __call__(self, record: Record) -> bool:
        key = (record.origin.public_key, record.payload, record.signature)
        verdict = self._known.get(key)
        if verdict is None:
            verdict = self._known[key] = record.verify()
        return verdict


@dataclass(slots=True)
class _Honest:
    key: NodeKey
    gossip: Gossip
    #: Per origin, the last advert seq and node seq accepted (the replay audit).
    accepted: dict[NodeId, list[int]] = field(default_factory=dict)

    def add_peer(self, node: NodeId, now: float) -> Actions:
        return self.gossip.add_peer(node, now)

    def tick(self, now: float) -> Actions:
        return self.gossip.tick(now)

    def receive(self, sender: NodeId, message: Message, now: float) -> Actions:
        return self.gossip.receive(sender, message, now)


Node = _Honest | Hostile


class Network:
    """N nodes, a clock in rounds, a lossy delaying message queue and an audit."""

    def __init__(self, cfg: SimConfig) -> None:
        self.sim = cfg
        self.cfg = cfg.gossip
        self.rng = random.Random(cfg.seed)
        self.round = 0
        self.violations: list[str] = []
        self.bound = MemoryBound.of(cfg.gossip, cfg.nodes)
        self.delivered = self.lost = 0
        self.signed: dict[NodeId, set[bytes]] = defaultdict(set)
        self._verify = _VerifyCache()
        self._queue: deque[tuple[NodeId, Outgoing]] = deque()
        self._later: dict[int, list[tuple[NodeId, Outgoing]]] = defaultdict(list)
        self._side: dict[NodeId, int] = {}
        keys = [NodeKey.from_private_bytes(self.rng.randbytes(32)) for _ in range(cfg.nodes)]
        honest = len(keys) - cfg.hostile
        self.honest_ids = [k.node_id for k in keys[:honest]]
        self.nodes: dict[NodeId, Node] = {k.node_id: self._honest(k) for k in keys[:honest]}
        for key in keys[honest:]:
            rng = random.Random(self.rng.randrange(2**32))
            sign = self.signer(key)
            self.nodes[key.node_id] = Hostile(key.node_id, sign, self.cfg, rng, self.honest_ids)
        self._start()

    @property
    def now(self) -> float:
        return EPOCH_S + self.round * self.cfg.interval_s

    # -- set-up ------------------------------------------------------------------------------

    def signer(self, key: NodeKey) -> Sign:
        """``key.sign`` that also records what it signed, for the forgery audit."""
        book = self.signed[key.node_id]

        def sign(payload: bytes) -> bytes:
            book.add(payload)
            return key.sign(payload)

        return sign

    def _honest(self, key: NodeKey) -> _Honest:
        rng = random.Random(self.rng.randrange(2**32))
        sign = self.signer(key)
        gossip = Gossip(key.node_id, self.cfg, rng, lambda _: True, sign, verify=self._verify)
        return _Honest(key, gossip)

    def _start(self) -> None:
        ids = list(self.nodes)
        refresh_s = self.cfg.record_ttl_s / 3
        for i, node_id in enumerate(self.honest_ids):
            node = self.nodes[node_id]
            assert isinstance(node, _Honest)
            cids = [cid_of(f"{i}/{j}".encode()) for j in range(self.sim.cids_per_node)]
            started = self.now - self.rng.uniform(0, refresh_s)
            node.gossip.publish(cids, (), started, [f"10.0.{i // 250}.{i % 250}:7700"])
        for node_id in ids:
            others = [o for o in ids if o != node_id]
            for peer in self.rng.sample(others, min(self.sim.bootstrap_peers, len(others))):
                self.connect(node_id, peer)
        self._drain()

    def connect(self, a: NodeId, b: NodeId) -> None:
        for x, y in ((a, b), (b, a)):
            node = self.nodes[x]
            if y not in _peers(node):
                self._dispatch(x, node.add_peer(y, self.now))

    # -- running -----------------------------------------------------------------------------

    def run_round(self) -> None:
        self.round += 1
        self._queue.extend(self._later.pop(self.round, []))
        order = list(self.nodes)
        self.rng.shuffle(order)
        for node_id in order:
            self._dispatch(node_id, self.nodes[node_id].tick(self.now))
        self._drain()
        if self.sim.audit:
            self._audit()

    def run_until(self, done: Callable[[], bool], max_rounds: int) -> int | None:
        """Run rounds until ``done()``; how many it took, or None if it never was."""
        for rounds in range(1, max_rounds + 1):
            self.run_round()
            if done():
                return rounds
        return None

    def publish(self, origin: NodeId, added: Sequence[Cid], removed: Sequence[Cid] = ()) -> int:
        """``origin`` changes its holdings now; returns the advert seq that says so."""
        node = self.nodes[origin]
        assert isinstance(node, _Honest)
        self._dispatch(origin, node.gossip.publish(added, removed, self.now))
        self._drain()
        return node.gossip.versions(origin)[0]

    def partition(self, side_of: dict[NodeId, int]) -> None:
        self._side = dict(side_of)

    def heal(self) -> None:
        self._side = {}

    def _dispatch(self, sender: NodeId, actions: Actions) -> None:
        node = self.nodes[sender]
        if isinstance(node, _Honest):
            self._handle_events(sender, node, actions.events)
        for out in actions.outgoing:
            self._send(sender, out)

    def _send(self, sender: NodeId, out: Outgoing) -> None:
        if self._cut(sender, out.to) or self.rng.random() < self.sim.loss:
            self.lost += 1
            return
        delay = self.rng.randint(0, self.sim.max_delay_rounds) if self.sim.max_delay_rounds else 0
        if delay:
            self._later[self.round + delay].append((sender, out))
        else:
            self._queue.append((sender, out))

    def _drain(self) -> None:
        while self._queue:
            sender, out = self._queue.popleft()
            if self._cut(sender, out.to):  # a partition began while it was held back
                self.lost += 1
                continue
            self.delivered += 1
            self._deliver(sender, out)

    def _deliver(self, sender: NodeId, out: Outgoing) -> None:
        receiver = self.nodes[out.to]
        try:
            message = self._through_wire(out.message) if self.sim.wire else out.message
        except MessageError as exc:
            if isinstance(receiver, _Honest):
                self._dispatch(out.to, receiver.gossip.reject_message(sender, exc.reason))
            return
        actions = receiver.receive(sender, message, self.now)
        self._dispatch(out.to, actions)
        if actions.reply is not None:
            self._send(out.to, Outgoing(sender, actions.reply))

    @staticmethod
    def _through_wire(message: Message) -> Message:
        data = canonical_encode(cast("CanonicalValue", encode_message(message)))
        return decode_message(canonical_decode(data, max_items=MAX_RECORD_CIDS * 2))

    def _cut(self, a: NodeId, b: NodeId) -> bool:
        return bool(self._side) and self._side.get(a) != self._side.get(b)

    def _handle_events(self, me: NodeId, node: _Honest, events: tuple[Event, ...]) -> None:
        for event in events:
            if isinstance(event, PeerLearned):
                if len(node.gossip.peers()) < self.sim.target_peers:
                    self.connect(me, event.node)
            elif self.sim.audit:
                self._audit_event(me, node, event)

    # -- measuring ---------------------------------------------------------------------------

    def knowing(self, origin: NodeId, advert_seq: int) -> float:
        """Fraction of honest nodes holding ``origin``'s adverts up to ``advert_seq``."""
        know = [self._gossip(n).versions(origin)[0] >= advert_seq for n in self.honest_ids]
        return sum(know) / len(know)

    def truth(self) -> dict[NodeId, tuple[int, int]]:
        """Every honest origin's own current versions."""
        return {n: self._gossip(n).versions(n) for n in self.honest_ids}

    def caught_up(self, target: dict[NodeId, tuple[int, int]]) -> bool:
        """Does every honest node hold at least ``target`` for every honest origin?"""
        for node_id in self.honest_ids:
            gossip = self._gossip(node_id)
            for origin, (advert_seq, node_seq) in target.items():
                have = gossip.versions(origin)
                if have[0] < advert_seq or have[1] < node_seq:
                    return False
        return True

    def nodes_retained(self, node_id: NodeId) -> Retained:
        return self._gossip(node_id).retained()

    def sent_bytes(self) -> int:
        return sum(self._gossip(n).counters["sent_bytes"] for n in self.honest_ids)

    def rejections(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for node_id in self.honest_ids:
            for key, count in self._gossip(node_id).counters.items():
                if key.startswith("rejected."):
                    total[key.removeprefix("rejected.")] += count
        return total

    def _gossip(self, node_id: NodeId) -> Gossip:
        node = self.nodes[node_id]
        assert isinstance(node, _Honest)
        return node.gossip

    # -- audit -------------------------------------------------------------------------------

    def _audit_event(self, me: NodeId, node: _Honest, event: Event) -> None:
        if isinstance(event, OriginExpired):
            node.accepted.pop(event.origin, None)
            return
        if isinstance(event, AdvertAccepted | OriginRefreshed):
            last = node.accepted.setdefault(event.origin, [0, 0])
            slot = 0 if isinstance(event, AdvertAccepted) else 1
            if event.seq <= last[slot]:
                self.violations.append(f"round {self.round}: {me.short()} accepted a replay")
            last[slot] = event.seq

    def _audit(self) -> None:
        horizon_ms = int((self.now - self.cfg.record_ttl_s - self.cfg.interval_s) * 1000)
        for node_id in self.honest_ids:
            gossip = self._gossip(node_id)
            where = f"round {self.round}: {node_id.short()}"
            for record in gossip.retained_records():
                if record.payload not in self.signed.get(record.origin, ()):
                    self.violations.append(f"{where} holds a forgery")
                if isinstance(record, NodeRecord) and record.timestamp_ms < horizon_ms:
                    self.violations.append(f"{where} holds a stale node record")
            held, bound = gossip.retained(), self.bound
            if (
                held.origins > bound.origins
                or held.records > bound.records
                or (held.cids > bound.cids or held.longest_chain > self.cfg.max_records_per_origin)
            ):
                self.violations.append(f"{where} holds more than the bound")


def _peers(node: Node) -> list[NodeId]:
    return node.gossip.peers() if isinstance(node, _Honest) else node.peers()
