"""The gossip state machine (hearthfile/gossip/protocol.py, origins.py, publisher.py),
driven back to back: a helper feeds each node's output to the others."""

from __future__ import annotations

import ast
import gc
import random
import tracemalloc
from dataclasses import replace
from pathlib import Path
from unittest.mock import patch

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hearthfile.cids import Cid, cid_of
from hearthfile.config import GossipConfig
from hearthfile.gossip.messages import Digest, Records
from hearthfile.gossip.origins import CID_BYTES_BOUND, REJECT_REASONS
from hearthfile.gossip.protocol import (
    QUIET_REASONS,
    Actions,
    AdvertAccepted,
    Event,
    Gossip,
    OriginExpired,
    OriginRefreshed,
    PeerLearned,
    RecordRejected,
)
from hearthfile.gossip.publisher import Publisher
from hearthfile.gossip.records import (
    AdvertRecord,
    NodeRecord,
    Record,
    decode_record,
    encode_record,
    sign_advert,
    sign_node,
)
from hearthfile.identity import NodeId, NodeKey

T0 = 1_700_000_000.0
CFG = GossipConfig()
KEYS = [NodeKey.from_private_bytes(bytes([i]) * 32) for i in range(1, 9)]


def cids(*names: str) -> list[Cid]:
    return [cid_of(n.encode()) for n in names]


class Net:
    """A few Gossip cores wired back to back, with one clock and an event log."""

    def __init__(self, count: int, cfg: GossipConfig = CFG, admit: set[int] | None = None) -> None:
        self.now = T0
        self.keys = KEYS[:count]
        allowed = {KEYS[i].node_id for i in admit} if admit is not None else None
        self.nodes = {
            k.node_id: Gossip(
                k.node_id, cfg, random.Random(i), lambda o: allowed is None or o in allowed, k.sign
            )
            for i, k in enumerate(self.keys)
        }
        self.events: dict[NodeId, list[Event]] = {k.node_id: [] for k in self.keys}

    def id(self, i: int) -> NodeId:
        return self.keys[i].node_id

    def g(self, i: int) -> Gossip:
        return self.nodes[self.id(i)]

    def start(self, i: int, held: list[Cid]) -> None:
        self.run(i, self.g(i).publish(held, (), self.now, [f"10.0.0.{i}:7700"]))

    def connect(self, i: int, j: int) -> None:
        self.run(i, self.g(i).add_peer(self.id(j), self.now))
        self.run(j, self.g(j).add_peer(self.id(i), self.now))

    def tick(self, *which: int) -> None:
        for i in which or range(len(self.keys)):
            self.run(i, self.g(i).tick(self.now))

    def run(self, i: int, actions: Actions) -> None:
        """Deliver everything ``actions`` asks for, and whatever that causes, at once."""
        queue = [(self.id(i), actions)]
        while queue:
            sender, acts = queue.pop(0)
            self.events[sender].extend(acts.events)
            for out in acts.outgoing:
                result = self.nodes[out.to].receive(sender, out.message, self.now)
                queue.append((out.to, result))
                if result.reply is not None:
                    back = self.nodes[sender].receive(out.to, result.reply, self.now)
                    queue.append((sender, back))

    def of(self, i: int, kind: type) -> list[Event]:
        return [e for e in self.events[self.id(i)] if isinstance(e, kind)]


def test_two_nodes_learn_each_other() -> None:
    net = Net(2)
    net.start(0, cids("a"))
    net.start(1, cids("b"))
    net.connect(0, 1)
    assert net.g(0).holdings(net.id(1)) == set(cids("b"))
    assert net.g(1).holdings(net.id(0)) == set(cids("a"))
    assert net.of(0, PeerLearned) == [PeerLearned(net.id(1), ("10.0.0.1:7700",))]
    accepted = net.of(0, AdvertAccepted)
    assert [(e.origin, e.added, e.full) for e in accepted] == [(net.id(1), tuple(cids("b")), True)]
    assert net.g(0).addresses(net.id(1)) == ("10.0.0.1:7700",)
    assert net.g(0).counters["sent_bytes"] == net.g(1).counters["received_bytes"] > 0


def test_changes_spread_as_deltas() -> None:
    net = Net(3)
    for i in range(3):
        net.start(i, cids(str(i)))
    net.connect(0, 1)
    net.connect(1, 2)
    net.tick()
    net.now += CFG.interval_s
    net.run(0, net.g(0).publish(cids("new"), cids("0"), net.now))
    net.tick()
    assert net.g(2).holdings(net.id(0)) == set(cids("new"))
    last = net.of(2, AdvertAccepted)[-1]
    assert (last.added, last.removed, last.full) == (tuple(cids("new")), tuple(cids("0")), False)


def test_identical_states_exchange_nothing_but_the_digest() -> None:
    net = Net(2)
    net.start(0, cids("a"))
    net.start(1, cids("b"))
    net.connect(0, 1)
    digest = net.g(0).tick(net.now).outgoing[0].message
    assert isinstance(digest, Digest)
    reply = net.g(1).receive(net.id(0), digest, net.now).reply
    assert reply == Records((), {})


def test_the_responder_asks_for_what_the_initiator_has() -> None:
    net = Net(2)
    net.start(0, cids("a"))
    net.start(1, cids("b"))
    g0, g1 = net.g(0), net.g(1)
    g0.add_peer(net.id(1), net.now)
    digest = g0.tick(net.now).outgoing[0].message
    reply = g1.receive(net.id(0), digest, net.now).reply
    assert reply is not None and reply.want == {net.id(0).public_key: (0, 0)}
    push = g0.receive(net.id(1), reply, net.now).outgoing
    assert len(push) == 1 and push[0].to == net.id(1)
    g1.receive(net.id(0), push[0].message, net.now)
    assert g1.holdings(net.id(0)) == set(cids("a"))


def test_wants_are_only_for_origins_we_would_accept() -> None:
    strangers = {bytes([i]) * 32: (5, 5) for i in range(1, 60)}
    closed = Gossip(KEYS[0].node_id, CFG, random.Random(0), lambda _: False, KEYS[0].sign)
    reply = closed.receive(KEYS[1].node_id, Digest(strangers), T0).reply
    assert reply is not None and reply.want == {}
    open_ = Gossip(KEYS[0].node_id, CFG, random.Random(0), lambda _: True, KEYS[0].sign)
    reply = open_.receive(KEYS[1].node_id, Digest(strangers), T0).reply
    assert reply is not None and len(reply.want) == 59
    tight = replace(CFG, max_exchange_bytes=64 * 1024)
    many = {i.to_bytes(32, "big"): (5, 5) for i in range(1, 4000)}
    small = Gossip(KEYS[0].node_id, tight, random.Random(0), lambda _: True, KEYS[0].sign)
    reply = small.receive(KEYS[1].node_id, Digest(many), T0).reply
    assert reply is not None and reply.wire_bytes <= 64 * 1024


# --- rejections ----------------------------------------------------------------------------------


class Fixture:
    """One receiver, and records signed by KEYS[1] as if relayed by KEYS[2]."""

    def __init__(self, cfg: GossipConfig = CFG, admit: bool = True) -> None:
        self.cfg = cfg
        self.me, self.origin, self.sender = KEYS[0], KEYS[1], KEYS[2]
        self.g = Gossip(self.me.node_id, cfg, random.Random(0), lambda _: admit, self.me.sign)
        self.ms = int(T0 * 1000)
        self.seq = self.ms

    def node(self, **kw: int) -> NodeRecord:
        self.seq += 1
        args = {"seq": self.seq, "timestamp_ms": self.ms, "snapshot_seq": 0} | kw
        return sign_node(self.origin.sign, self.origin.node_id, addresses=["10.0.0.1:1"], **args)

    def advert(self, prev: int, added: list[Cid], **kw: int) -> AdvertRecord:
        self.seq += 1
        args = {"seq": self.seq, "timestamp_ms": self.ms} | kw
        return sign_advert(self.origin.sign, self.origin.node_id, prev=prev, full=prev == 0,
                           addresses=(), added=added, **args)  # fmt: skip

    def send(self, *records: Record, now: float = T0) -> list[Event]:
        result = self.g.receive(self.sender.node_id, Records(records), now)
        return list(result.events)

    def rejected(self, reason: str) -> int:
        assert reason in REJECT_REASONS
        return self.g.counters[f"rejected.{reason}"]


def test_replays_and_old_records_are_dropped_quietly() -> None:
    f = Fixture()
    n = f.node()
    snap = f.advert(0, cids("a"))
    delta = f.advert(snap.seq, cids("b"))
    f.send(n, snap, delta)
    assert f.g.counters["accepted"] == 3
    assert f.send(n, snap, delta) == []  # the same again
    assert f.rejected("not_newer") == 3
    assert f.g.holdings(f.origin.node_id) == set(cids("a", "b"))


def test_gaps_wait_for_the_missing_record() -> None:
    f = Fixture()
    n, snap = f.node(), f.advert(0, cids("a"))
    d1 = f.advert(snap.seq, cids("b"))
    d2 = f.advert(d1.seq, cids("c"))
    events = f.send(n, snap, d2)
    # A gap is normal (loss, races): counted, not reported.
    assert not [e for e in events if isinstance(e, RecordRejected)]
    assert f.rejected("gap") == 1
    f.send(d1, d2)
    assert f.g.holdings(f.origin.node_id) == set(cids("a", "b", "c"))


def test_adverts_need_a_live_node_record_first() -> None:
    f = Fixture()
    f.send(f.advert(0, cids("a")))
    assert f.rejected("unknown_origin") == 1


def test_stale_and_future_timestamps() -> None:
    f = Fixture()
    ttl_ms, skew_ms = int(CFG.record_ttl_s * 1000), int(CFG.max_clock_skew_s * 1000)
    events = f.send(f.node(timestamp_ms=f.ms - ttl_ms - 1))
    assert f.rejected("stale") == 1 and events == []
    events = f.send(f.node(timestamp_ms=f.ms + skew_ms + 1))
    assert events == [RecordRejected(f.sender.node_id, f.origin.node_id, "future")]
    f.send(f.node(timestamp_ms=f.ms + skew_ms))  # at the edge: accepted
    assert f.g.counters["accepted"] == 1


def test_oversize_records_are_rejected() -> None:
    f = Fixture(replace(CFG, max_cids_per_record=2))
    snap = f.advert(0, cids("a", "b", "c"))
    events = f.send(f.node(), snap)
    assert RecordRejected(f.sender.node_id, f.origin.node_id, "oversize") in events


def test_tampered_and_forged_records_are_rejected() -> None:
    f = Fixture()
    n = f.node()
    f.send(n)
    snap = f.advert(0, cids("a"))
    tampered = replace(snap, added=tuple(cids("evil")))
    forged = sign_advert(f.sender.sign, f.origin.node_id, seq=snap.seq, prev=0, full=True,
                         timestamp_ms=f.ms, addresses=())  # fmt: skip
    for bad in (tampered, forged, replace(n, seq=n.seq + 1)):
        events = f.send(bad)
        assert [e.reason for e in events if isinstance(e, RecordRejected)] == ["bad_signature"]
    assert f.g.holdings(f.origin.node_id) == set()


def test_strangers_records_are_dropped_and_counted() -> None:
    f = Fixture(admit=False)
    assert f.send(f.node()) == []
    assert f.rejected("stranger") == 1
    assert f.g.origins() == []


def test_superseded_chains_are_not_replayed() -> None:
    f = Fixture()
    old = f.advert(0, cids("old"))
    new = f.advert(0, cids("new"))
    f.send(f.node(snapshot_seq=new.seq))
    f.send(old)
    assert f.rejected("superseded") == 1
    f.send(new)
    assert f.g.holdings(f.origin.node_id) == set(cids("new"))


def test_a_flooding_origin_is_rate_limited() -> None:
    cfg = replace(CFG, max_records_per_origin=10, origin_records_per_round=1)
    f = Fixture(cfg)
    f.send(f.node())
    head = f.advert(0, [])
    records: list[Record] = [head]
    for i in range(20):  # all stamped in the same millisecond
        head = f.advert(head.seq, cids(str(i)))
        records.append(head)
    events = f.send(*records)
    # The bucket holds 10 tokens: the node record took one, 9 adverts the rest; then
    # one refusal, and the records after it no longer follow on.
    assert f.g.counters["accepted"] == 10
    assert f.rejected("rate_limited") == 1 and f.rejected("gap") == 11
    assert RecordRejected(f.sender.node_id, f.origin.node_id, "rate_limited") in events
    # A round later (by the records' own clock) one more token is there.
    later = f.advert(records[8].seq, cids("later"), timestamp_ms=f.ms + 5000)
    f.send(later)
    assert f.g.versions(f.origin.node_id)[0] == later.seq


def test_a_chain_is_bounded() -> None:
    cfg = replace(CFG, max_records_per_origin=4, origin_records_per_round=100)
    f = Fixture(cfg)
    f.send(f.node())
    head = f.advert(0, [])
    f.send(head)
    for i in range(4):
        head = f.advert(head.seq, cids(str(i)), timestamp_ms=f.ms + 1000 * i)
        f.send(head)
    assert f.rejected("chain_full") == 1
    assert f.g.retained().longest_chain == 4


def test_each_sender_has_a_byte_budget() -> None:
    cfg = replace(CFG, max_exchange_bytes=64 * 1024)
    f = Fixture(cfg)
    origins = [NodeKey.from_private_bytes(bytes([100 + i]) * 32) for i in range(40)]
    big = []
    for k in origins:  # 40 origins x ~7 KB of CIDs = 280 KB > 4 x 64 KiB
        ms = f.ms
        big.append(sign_node(k.sign, k.node_id, seq=ms, timestamp_ms=ms, addresses=(),
                             snapshot_seq=0))  # fmt: skip
        many = cids(*(f"{k}{i}" for i in range(200)))
        big.append(sign_advert(k.sign, k.node_id, seq=ms - 1, prev=0, full=True, timestamp_ms=ms,
                               addresses=(), added=many))  # fmt: skip
    events = f.send(*big)
    assert f.rejected("sender_budget") > 0
    assert RecordRejected(f.sender.node_id, None, "sender_budget") in events
    assert f.g.counters["accepted"] < len(big)


def test_the_origin_table_has_a_bound() -> None:
    f = Fixture(replace(CFG, max_origins=3))
    others = [NodeKey.from_private_bytes(bytes([50 + i]) * 32) for i in range(5)]
    for k in others:
        f.send(sign_node(k.sign, k.node_id, seq=f.ms, timestamp_ms=f.ms, addresses=(),
                         snapshot_seq=0))  # fmt: skip
    assert len(f.g.origins()) == 3
    assert f.rejected("too_many_origins") == 2


def test_quiet_reasons_are_reasons() -> None:
    assert QUIET_REASONS <= REJECT_REASONS


def test_undecodable_messages_are_reported() -> None:
    f = Fixture()
    actions = f.g.reject_message(f.sender.node_id, "bad address")
    assert actions.events == (RecordRejected(f.sender.node_id, None, "malformed: bad address"),)
    assert f.rejected("malformed") == 1


# --- catch-up, snapshots, expiry, restarts --------------------------------------------------------


def test_a_far_behind_node_gets_the_snapshot_and_the_deltas_after_it() -> None:
    cfg = replace(CFG, max_records_per_origin=6, origin_records_per_round=100)
    net = Net(2, cfg)
    net.start(0, cids("a"))
    net.start(1, [])
    net.connect(0, 1)
    net.g(1).remove_peer(net.id(0))
    net.g(0).remove_peer(net.id(1))
    for i in range(12):  # enough deltas to force a new snapshot on the way
        net.now += CFG.interval_s
        net.g(0).publish(cids(f"x{i}"), cids("a") if i == 0 else (), net.now)
    expected = set(cids(*(f"x{i}" for i in range(12))))
    assert net.g(0).holdings(net.id(0)) == expected
    net.connect(0, 1)
    assert net.g(1).holdings(net.id(0)) == expected
    full = [e for e in net.of(1, AdvertAccepted) if e.full]
    assert len(full) == 2  # the first snapshot, then the one replacing the long chain


def test_large_holdings_span_several_records() -> None:
    cfg = replace(CFG, max_cids_per_record=10, max_records_per_origin=8)
    net = Net(2, cfg)
    held = cids(*(f"c{i}" for i in range(35)))
    net.start(0, held)
    net.start(1, [])
    net.connect(0, 1)
    assert net.g(1).holdings(net.id(0)) == set(held)
    accepted = net.of(1, AdvertAccepted)
    assert [len(e.added) for e in accepted] == [10, 10, 10, 5]
    assert [e.full for e in accepted] == [True, False, False, False]


def test_a_burst_of_changes_costs_few_records() -> None:
    net = Net(2)
    net.start(0, [])
    net.start(1, [])
    net.connect(0, 1)
    net.now += CFG.interval_s
    for i in range(100):  # a hundred `add`s within a second
        net.run(0, net.g(0).publish(cids(f"f{i}"), (), net.now + i / 100))
    net.now += CFG.interval_s
    net.tick()
    accepted = [e for e in net.of(1, AdvertAccepted) if not e.full]
    assert [len(e.added) for e in accepted] == [1, 99]  # the first at once, the rest together
    assert net.g(1).holdings(net.id(0)) == set(cids(*(f"f{i}" for i in range(100))))


def test_a_snapshot_keeps_the_newest_cids_when_too_many() -> None:
    cfg = replace(CFG, max_cids_per_record=5, max_records_per_origin=4)
    p = Publisher(KEYS[0].node_id, cfg, KEYS[0].sign)
    held = cids(*(f"c{i}" for i in range(30)))
    p.change(held, (), ["10.0.0.1:1"])
    records = p.due(int(T0 * 1000))
    adverts = [r for r in records if isinstance(r, AdvertRecord)]
    told = {c for r in adverts for c in r.added}
    assert told == set(held[-10:])  # half the chain bound: 2 records of 5


def test_silent_origins_expire_and_live_ones_do_not() -> None:
    net = Net(3)
    for i in range(3):
        net.start(i, cids(str(i)))
    net.connect(0, 1)
    net.connect(0, 2)
    # Node 2 goes silent; 0 and 1 keep ticking for two ttls.
    for _ in range(int(2 * CFG.record_ttl_s / CFG.interval_s)):
        net.now += CFG.interval_s
        net.tick(0, 1)
    assert net.of(0, OriginExpired) == [OriginExpired(net.id(2))]
    assert net.id(1) in net.g(0).origins() and net.id(2) not in net.g(0).origins()
    refreshed = [e for e in net.of(0, OriginRefreshed) if e.origin == net.id(1)]
    assert len(refreshed) >= 6  # a heartbeat every third of the ttl


def test_peer_exchange_spreads_addresses_beyond_neighbours() -> None:
    net = Net(3)
    for i in range(3):
        net.start(i, [])
    net.connect(0, 1)
    net.connect(1, 2)
    net.tick()
    learned = {e.node: e.addresses for e in net.of(0, PeerLearned)}
    assert learned[net.id(2)] == ("10.0.0.2:7700",)
    # New addresses are news too.
    net.now += CFG.interval_s
    net.run(2, net.g(2).publish((), (), net.now, ["10.9.9.9:7700"]))
    net.tick()
    assert net.of(0, PeerLearned)[-1] == PeerLearned(net.id(2), ("10.9.9.9:7700",))


def test_a_restart_with_the_clock_set_back_catches_up_with_itself() -> None:
    net = Net(2)
    net.start(0, cids("a"))
    net.start(1, [])
    net.connect(0, 1)
    old = net.g(1).versions(net.id(0))
    # Node 0 restarts with no state, its clock a minute behind its old records.
    net.now -= 60
    k = net.keys[0]
    net.nodes[k.node_id] = Gossip(k.node_id, CFG, random.Random(9), lambda _: True, k.sign)
    net.start(0, cids("b"))
    net.connect(0, 1)
    net.tick()  # node 0 saw its old records, jumped past them and restated its holdings
    assert net.g(1).versions(net.id(0)) > old
    assert net.g(1).holdings(net.id(0)) == set(cids("b"))


# --- order independence -------------------------------------------------------------------------


def _history(ops: list[tuple[bool, int]]) -> list[Record]:
    """Every record an origin signs while it adds/removes CIDs, snapshots included."""
    cfg = replace(CFG, max_records_per_origin=6, max_cids_per_record=3, origin_records_per_round=64)
    p = Publisher(KEYS[1].node_id, cfg, KEYS[1].sign)
    ms = int(T0 * 1000)
    out: list[Record] = []
    p.change(cids("seed"), (), ["10.0.0.1:1"])
    for i, (add, n) in enumerate(ops):
        out += p.due(ms + 1000 * i)
        change = cids(f"c{n}")
        p.change(change if add else (), () if add else change, None)
    out += p.due(ms + 1000 * len(ops))
    return out


def _state_after(deliveries: list[list[Record]]) -> tuple[tuple[int, int], frozenset[Cid]]:
    g = Gossip(KEYS[0].node_id, CFG, random.Random(0), lambda _: True, KEYS[0].sign)
    now = T0 + 1000
    for _ in range(len(deliveries) + 1):  # anti-entropy: keep offering until nothing changes
        before = g.counters["accepted"]
        for batch in deliveries:
            g.receive(KEYS[2].node_id, Records(tuple(batch)), now)
        if g.counters["accepted"] == before:
            break
    return g.versions(KEYS[1].node_id), g.holdings(KEYS[1].node_id)


@settings(max_examples=40, deadline=None)
@given(
    ops=st.lists(st.tuples(st.booleans(), st.integers(0, 6)), min_size=1, max_size=14),
    seed=st.integers(0, 2**32),
    batches=st.integers(1, 6),
)
def test_merging_is_order_independent(ops: list[tuple[bool, int]], seed: int, batches: int) -> None:
    history = _history(ops)
    in_order = _state_after([history])
    shuffled = list(history)
    random.Random(seed).shuffle(shuffled)
    count = min(batches, len(shuffled))
    cuts = sorted(random.Random(seed + 1).sample(range(len(shuffled) + 1), count))
    pieces = [shuffled[a:b] for a, b in zip([0, *cuts], [*cuts, len(shuffled)], strict=True)]
    assert _state_after([p for p in pieces if p]) == in_order


# --- purity ------------------------------------------------------------------------------------


def test_gossip_modules_do_no_io() -> None:
    package = Path(__file__).resolve().parents[2] / "hearthfile"
    forbidden = {"trio", "trio_websocket", "socket", "asyncio", "time", "select", "os", "msgpack"}
    for name in ("gossip/records", "gossip/messages", "gossip/origins", "gossip/publisher",
                 "gossip/protocol", "testing/gossip_sim", "testing/gossip_hostile",
                 "testing/gossip_scenarios"):  # fmt: skip
        tree = ast.parse((package / f"{name}.py").read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        bad = {m for m in imported if m.split(".")[0] in forbidden}
        assert not bad, f"{name}.py imports {bad}"


@pytest.mark.parametrize("reason", sorted(REJECT_REASONS))
def test_reasons_are_counter_friendly(reason: str) -> None:
    assert reason.isidentifier()


def test_a_sender_budget_is_kept_per_key_across_reconnects() -> None:
    cfg = replace(CFG, max_exchange_bytes=64 * 1024)
    f = Fixture(cfg)
    origins = [NodeKey.from_private_bytes(bytes([100 + i]) * 32) for i in range(40)]
    records: list[Record] = []
    for k in origins:
        ms = f.ms
        records.append(sign_node(k.sign, k.node_id, seq=ms, timestamp_ms=ms, addresses=(),
                                 snapshot_seq=0))  # fmt: skip
        many = cids(*(f"{k}{i}" for i in range(200)))
        records.append(sign_advert(k.sign, k.node_id, seq=ms - 1, prev=0, full=True,
                                   timestamp_ms=ms, addresses=(), added=many))  # fmt: skip
    f.send(*records[:40])  # spends the budget
    spent = f.rejected("sender_budget")
    f.g.add_peer(f.sender.node_id, T0)
    f.g.remove_peer(f.sender.node_id)  # a reconnect: down, then up again
    f.g.add_peer(f.sender.node_id, T0)
    f.send(*records[40:])
    assert f.rejected("sender_budget") > spent  # the budget was not refilled


def test_retained_cids_have_a_bound() -> None:
    f = Fixture(replace(CFG, max_cids_per_record=1024))
    keys = [NodeKey.from_private_bytes(bytes([150 + i]) * 32) for i in range(3)]
    with patch("hearthfile.gossip.origins.MAX_RETAINED_CIDS", 2048):
        for n, k in enumerate(keys):
            ms = f.ms
            f.send(sign_node(k.sign, k.node_id, seq=ms, timestamp_ms=ms, addresses=(),
                             snapshot_seq=0))  # fmt: skip
            many = cids(*(f"{n}-{i}" for i in range(1024)))
            f.send(sign_advert(k.sign, k.node_id, seq=ms - 1, prev=0, full=True,
                               timestamp_ms=ms, addresses=(), added=many))  # fmt: skip
    assert f.rejected("table_full") == 1
    assert f.g.retained().cids == 2048


def test_a_retained_cid_costs_at_most_the_stated_bound() -> None:
    f = Fixture(replace(CFG, max_cids_per_record=1024))
    keys = [NodeKey.from_private_bytes(bytes([180 + i]) * 32) for i in range(8)]
    wire = []  # as the records arrive: bytes, decoded while memory is traced
    for n, k in enumerate(keys):
        ms = f.ms
        node = sign_node(k.sign, k.node_id, seq=ms, timestamp_ms=ms, addresses=(), snapshot_seq=0)
        many = cids(*(f"m{n}-{i}" for i in range(1024)))
        advert = sign_advert(k.sign, k.node_id, seq=ms - 1, prev=0, full=True, timestamp_ms=ms,
                             addresses=(), added=many)  # fmt: skip
        wire.append([msgpack.packb(encode_record(r)) for r in (node, advert)])
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for pair in wire:
        f.send(*(decode_record(msgpack.unpackb(raw)) for raw in pair))
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert f.g.retained().cids == 8 * 1024
    assert used / f.g.retained().cids < CID_BYTES_BOUND, used / f.g.retained().cids
