"""The node's typed events and their bus (hearthfile/events.py)."""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

from hearthfile import events
from hearthfile.events import Counters, EventBus
from hearthfile.identity import NodeKey

CID = "blake3:" + "ab" * 32
NODE = NodeKey.generate().node_id


def test_ids_rise_by_one_and_the_ring_keeps_the_newest() -> None:
    bus = EventBus(capacity=3, clock=lambda: 5.0)
    for _ in range(5):
        bus.publish(events.TransferStarted(CID))
    assert bus.last_id == 5
    assert [e.id for e in bus.recorded()] == [3, 4, 5]
    assert [e.id for e in bus.recorded(3)] == [4, 5]
    assert bus.recorded(5) == []
    assert bus.recorded(99) == []


def test_wire_form_keeps_the_event_names_and_fields() -> None:
    bus = EventBus(clock=lambda: 7.0)
    bus.publish(events.PeerConnected(NODE, "127.0.0.1:1", "inbound"))
    bus.publish(events.SourceQuarantined(NODE, CID, 3))
    bus.publish(events.CidsAdvertised("self", (CID,), ()))
    wire = [e.to_wire() for e in bus.recorded()]
    assert wire[0] == {"seq": 1, "at": 7.0, "event": "peer.up", "node_id": str(NODE),
                       "remote": "127.0.0.1:1", "direction": "inbound"}  # fmt: skip
    assert wire[1]["event"] == "source.quarantined" and wire[1]["node_id"] == str(NODE)
    assert wire[2] == {"seq": 3, "at": 7.0, "event": "file.cid.advertised", "origin": "self",
                       "added": [CID], "removed": []}  # fmt: skip
    json.dumps(wire)  # plain values only


def test_every_event_kind_is_distinct() -> None:
    kinds = [t.kind for t in events.Event.__args__]  # type: ignore[attr-defined]
    assert len(kinds) == len(set(kinds))


def test_subscribers_see_every_event_in_order() -> None:
    bus = EventBus()
    seen: list[events.Event] = []
    bus.subscribe(seen.append)
    published = [events.TransferStarted(CID), events.TransferFailed(CID, "timeout", "slow")]
    for event in published:
        bus.publish(event)
    assert seen == published


async def test_wait_since_returns_at_once_when_there_is_news() -> None:
    bus = EventBus()
    bus.publish(events.TransferStarted(CID))
    with trio.fail_after(1):
        assert [e.id for e in await bus.wait_since(0, 60)] == [1]


async def test_wait_since_wakes_on_a_new_event(autojump_clock: trio.testing.MockClock) -> None:
    bus = EventBus()
    got: list[int] = []

    async def poll() -> None:
        got.extend(e.id for e in await bus.wait_since(0, 30))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll)
        await trio.sleep(5)
        assert got == []
        bus.publish(events.TransferStarted(CID))
    assert got == [1]


async def test_wait_since_times_out_empty(autojump_clock: trio.testing.MockClock) -> None:
    bus = EventBus()
    start = trio.current_time()
    assert await bus.wait_since(0, 10) == []
    assert trio.current_time() - start == pytest.approx(10)


async def test_follow_yields_old_then_new(autojump_clock: trio.testing.MockClock) -> None:
    bus = EventBus()
    bus.publish(events.TransferStarted(CID))
    ids: list[int] = []

    async def follow() -> None:
        async for entry in bus.follow():
            ids.append(entry.id)
            if entry.id == 2:
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(follow)
        await trio.sleep(1)
        bus.publish(events.TransferStarted(CID))
    assert ids == [1, 2]


def test_counters_follow_the_events() -> None:
    counters = Counters()
    for event in [
        events.TransferStarted(CID),
        events.TransferStarted(CID),
        events.TransferShares(CID, {"a": 2}, 100, 30, 7),
        events.TransferDone(CID, 100, 1, 0.5),
        events.TransferFailed(CID, "timeout", "slow"),
        events.SourceQuarantined(NODE, CID, 1),
        events.BlobPushed(CID, NODE, 2, 1, 512),
        events.BlobEvicted(CID),
        events.BlobEvicted(CID),
        events.CidsAdvertised("self", (CID,), ()),
        events.CidsAdvertised(str(NODE), (CID,), ()),
        events.PeerConnected(NODE, "x", "inbound"),
    ]:
        counters.observe(event)
    counters.add_served(42)
    snap = counters.snapshot()
    assert snap["transfers_active"] == 0
    assert (snap["transfers_done"], snap["transfers_failed"]) == (1, 1)
    assert snap["bytes_fetched"] == 100
    assert (snap["redundant_bytes"], snap["failed_hash_bytes"]) == (30, 7)
    assert snap["sources_quarantined"] == 1
    assert snap["bytes_uploaded"] == 512
    assert snap["bytes_served"] == 42
    assert snap["gc_evictions"] == 2
    assert snap["gossip_records"] == 1, "our own adverts are not gossip records received"
    assert snap["peers_connected"] == 1
    counters.observe(events.PeerDisconnected(NODE, "closed"))
    assert counters.snapshot()["peers_connected"] == 0
