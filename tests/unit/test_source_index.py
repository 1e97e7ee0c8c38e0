"""SourceIndex: its caps hold, trimming is O(1) per CID, an entry's memory is bounded."""

from __future__ import annotations

import cProfile
import gc
import hashlib
import pstats
import tracemalloc

from hearthfile.cids import Cid, cid_from_digest
from hearthfile.gossip.index import ENTRY_BYTES_BOUND, SourceIndex
from hearthfile.identity import NodeId


def node(i: int) -> NodeId:
    return NodeId(hashlib.sha256(b"node%d" % i).digest())


def cids(start: int, count: int) -> list[Cid]:
    digests = (hashlib.sha256(b"%d" % i).digest() for i in range(start, start + count))
    return [cid_from_digest(d) for d in digests]


def test_a_source_holding_nothing_does_not_break_the_global_trim() -> None:
    index = SourceIndex(max_entries=10)
    index.record(node(0), [], now=1.0)  # a peer that holds no blobs
    index.record(node(1), cids(0, 8), now=2.0)
    index.record(node(2), cids(100, 4), now=3.0)  # raised StopIteration before
    assert len(index) == 10
    # The stalest entries went first: node 1's two oldest.
    assert index.sources(cids(0, 1)[0], now=4.0) == []
    assert [s.node for s in index.sources(cids(2, 1)[0], now=4.0)] == [node(1)]


def test_the_caps_hold_whatever_the_feed() -> None:
    index = SourceIndex(max_cids_per_source=50, max_entries=300)
    for round_ in range(40):
        for n in range(10):
            index.record(node(n), cids(round_ * 37 + n * 10_000, 20), now=float(round_))
            assert len(index) <= 300
    for n in range(10):
        held = [c for c in cids(n * 10_000, 40 * 37 + 20) if index.sources(c, now=100.0)]
        assert len(held) <= 50


def test_re_recording_refreshes_and_keeps_the_freshest() -> None:
    index = SourceIndex(max_cids_per_source=3)
    a, b, c, d = cids(0, 4)
    index.record(node(0), [a, b, c], now=1.0)
    index.record(node(0), [a], now=2.0)  # a is now the freshest
    index.record(node(0), [d], now=3.0)  # over the cap: b, the stalest, goes
    assert index.sources(b, now=4.0) == []
    assert all(index.sources(x, now=4.0) for x in (a, c, d))


def test_expired_entries_leave_memory() -> None:
    index = SourceIndex(ttl_s=10.0)
    index.record(node(0), cids(0, 5), now=1.0)
    index.record(node(1), cids(10, 5), now=6.0)
    assert index.expire(now=12.0) == 5
    assert len(index) == 5
    index.record(node(2), cids(20, 1), now=17.0)  # recording expires the rest
    assert len(index) == 1


def calls_per_record(index: SourceIndex, who: NodeId, batch: list[Cid]) -> int:
    profile = cProfile.Profile()
    profile.runcall(index.record, who, batch, 1e6)
    return int(pstats.Stats(profile).total_calls)  # type: ignore[attr-defined]


def test_trimming_at_the_caps_costs_o1_per_cid() -> None:
    """At the global cap with many sources, one more CID costs a handful of calls
    (counted, not timed): the old trim looked at every source per dropped entry."""
    index = SourceIndex(max_cids_per_source=20, max_entries=20 * 2000)
    for n in range(2000):
        index.record(node(n), cids(n * 100, 20), now=1e6 - 1 + n / 10_000)
    assert len(index) == 20 * 2000
    batch = cids(10**6, 100)
    global_trim = calls_per_record(index, node(99_999), batch)
    per_source = calls_per_record(index, node(5), cids(2 * 10**6, 100))
    assert len(index) == 20 * 2000
    assert global_trim < 50 * len(batch)
    assert per_source < 50 * len(batch)


def test_an_entry_costs_at_most_the_stated_bound() -> None:
    sources, per_source = 50, 400
    names = [cids(n * per_source, per_source) for n in range(sources)]
    nodes = [node(n) for n in range(sources)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    index = SourceIndex()
    for n in range(sources):
        index.record(nodes[n], [Cid(str(c) + "") for c in names[n]], now=1.0)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(index) == sources * per_source
    # The CID strings are fresh copies here, as they are when decoded off the wire.
    assert used / len(index) < ENTRY_BYTES_BOUND, used / len(index)
