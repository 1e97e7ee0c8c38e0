"""The node's named parts, each on its own with fakes: source finding
(transfer/sources.py), fetch admission (transfer/manager.py), status rows
(services/directory.py) and the peer wiring of node.py."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from hearthfile import events
from hearthfile.blobs.chunker import Manifest
from hearthfile.blobs.facade import AsyncStore
from hearthfile.blobs.store import BlobStore
from hearthfile.bus.pool import ConnectionInfo
from hearthfile.cids import Cid
from hearthfile.config import Address
from hearthfile.errors import PeerUnavailable, ServiceError
from hearthfile.events import EventBus
from hearthfile.gossip.index import SourceIndex
from hearthfile.identity import NodeId, NodeKey
from hearthfile.node import HeapTrim, PeerReports
from hearthfile.services.directory import NodeDirectory
from hearthfile.transfer.manager import TransferManager
from hearthfile.transfer.peer import ProgressFn
from hearthfile.transfer.running import Span
from hearthfile.transfer.sources import SourceFinder
from hearthfile.trust.levels import TrustLevel

CID = Cid("blake3:" + "cd" * 32)
ME, A, B, C = (NodeKey.generate().node_id for _ in range(4))


class FakeConn:
    """A peer that lists ``holds`` and records what it was told."""

    def __init__(self, peer: NodeId, holds: set[Cid] = frozenset()) -> None:  # type: ignore[assignment]
        self.peer = peer
        self.holds = holds
        self.calls: list[tuple[str, Any]] = []

    async def call(self, cap: str, args: Any = None, **_: Any) -> Any:
        self.calls.append((cap, args))
        if cap == "file.list":
            hit = args["prefix"] in self.holds
            return {"items": [{"cid": args["prefix"]}] if hit else []}
        return {}

    def open_call(self, cap: str, args: Any = None, **_: Any) -> Any:
        raise NotImplementedError


class FakePeers:
    def __init__(self, connected: Iterable[FakeConn], dialable: dict[NodeId, FakeConn]) -> None:
        self.conns = {c.peer: c for c in connected}
        self.dialable = dialable
        self.dialed: list[tuple[NodeId, Address | None]] = []

    def connection(self, node: NodeId) -> FakeConn | None:
        return self.conns.get(node)

    def connections(self) -> Sequence[FakeConn]:
        return list(self.conns.values())

    async def get(self, node: NodeId, address: Address | None = None) -> FakeConn:
        self.dialed.append((node, address))
        if node not in self.dialable or address is None:
            raise PeerUnavailable(node.short(), "no route")
        self.conns[node] = self.dialable[node]
        return self.dialable[node]


def finder(peers: FakePeers, index: SourceIndex) -> SourceFinder:
    return SourceFinder(
        ME,
        peers,
        index,
        addresses=lambda node: ["127.0.0.1:9"],
        member=lambda node: node != C,
        clock=lambda: 100.0,
    )


async def test_holders_in_the_index_are_dialed_and_nobody_else_is_asked() -> None:
    index = SourceIndex(ttl_s=600)
    index.record(B, [CID], 100.0)
    a, b = FakeConn(A, {CID}), FakeConn(B, {CID})
    peers = FakePeers([a, FakeConn(ME)], {B: b})
    found = await finder(peers, index).find(CID)
    assert [p.peer for p in found] == [B]
    assert peers.dialed == [(B, Address("127.0.0.1", 9))]
    assert a.calls == [], "the index answered: no fan-out"


async def test_without_index_entries_every_connected_peer_is_asked() -> None:
    index = SourceIndex(ttl_s=600)
    a, b, me = FakeConn(A, {CID}), FakeConn(B), FakeConn(ME, {CID})
    found = await finder(FakePeers([a, b, me], {}), index).find(CID)
    assert [p.peer for p in found] == [A]
    assert me.calls == [], "the node's own CLI connection is not a source"
    assert [s.node for s in index.sources(CID, 100.0)] == [A], "the answer is remembered"


async def test_the_node_itself_is_never_its_own_source() -> None:
    index = SourceIndex(ttl_s=600)
    index.record(ME, [CID], 100.0)
    assert await finder(FakePeers([FakeConn(ME)], {}), index).known(CID) == []


async def test_only_members_are_told_what_we_fetch() -> None:
    a, c = FakeConn(A), FakeConn(C)
    await finder(FakePeers([a, c], {}), SourceIndex(ttl_s=600)).tell_fetching(CID)
    assert a.calls == [("file.advertise", {"cids": [CID]})]
    assert c.calls == []


class GatedManager(TransferManager):
    """A manager whose fetches wait on a gate instead of the network."""

    def __init__(self, store: AsyncStore, bus: EventBus, slots: int) -> None:
        super().__init__(
            store, finder(FakePeers([], {}), SourceIndex(ttl_s=1)), bus.publish,
            lambda added, removed: None, max_concurrent=slots,
        )  # fmt: skip
        self.gate = trio.Event()
        self.running = 0
        self.peak = 0

    async def _fetch_now(
        self, cid: Cid, span: Span, sequential: bool, progress: ProgressFn
    ) -> Manifest:
        self.running += 1
        self.peak = max(self.peak, self.running)
        await self.gate.wait()
        self.running -= 1
        return Manifest(0, 262144, (), Cid("blake3:" + "00" * 32))


async def test_fetches_beyond_max_concurrent_wait_their_turn(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "data")
    try:
        manager = GatedManager(AsyncStore(store), EventBus(), slots=2)
        cids = [Cid("blake3:" + f"{i:02x}" * 32) for i in range(5)]
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for cid in cids:
                    nursery.start_soon(manager.fetch, cid, None, False, lambda p: None)
                while len(manager.snapshot()) < 5:  # past the store check, in a thread
                    await trio.sleep(0.01)
                await trio.testing.wait_all_tasks_blocked()
                assert manager.running == 2, "two slots: two fetches run, three wait"
                manager.gate.set()
        assert manager.peak == 2
    finally:
        store.close()


def test_max_concurrent_must_admit_something(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "data")
    try:
        with pytest.raises(ValueError):
            GatedManager(AsyncStore(store), EventBus(), slots=0)
    finally:
        store.close()


@dataclass
class FakePool:
    rows: list[ConnectionInfo]

    def connections(self) -> list[ConnectionInfo]:
        return self.rows


def info(node: NodeId) -> ConnectionInfo:
    return ConnectionInfo(node, "127.0.0.1:1", "inbound", 1.0, 10, 20, 0, 0)


def trust_of(node: NodeId) -> TrustLevel:
    return TrustLevel.SELF if node == ME else TrustLevel.MEMBER


def test_directory_rows_leave_out_the_node_itself(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "data")
    index = SourceIndex(ttl_s=600)
    now = time.time()
    index.record(ME, [CID], now)
    index.record(A, [CID], now)
    index.record(B, [CID], now)
    directory = NodeDirectory(
        ME,
        store,
        FakePool([info(ME), info(A)]),
        index,
        trust_of=trust_of,
        gossip_peers=lambda: [
            {"node_id": str(A), "addresses": ["x:1"]},
            {"node_id": str(B), "addresses": ["y:2"]},
            {"node_id": str(ME), "addresses": ["z:3"]},
        ],
    )
    try:
        directory.listening(Address("127.0.0.1", 4000))
        status = directory.status()
        assert status.peers == 1 and status.listen == "127.0.0.1:4000"
        assert status.node_id == str(ME) and status.blobs == 0
        peers = directory.peers()
        assert [(r.node_id, r.direction) for r in peers] == [
            (str(A), "inbound"),
            (str(B), "gossip"),
        ]
        holders = {r.node_id: r.online for r in directory.whohas(CID)}
        assert holders == {str(A): True, str(B): False}
    finally:
        store.close()


def test_the_nodes_own_cli_connections_make_no_peer_events() -> None:
    bus = EventBus()
    report = PeerReports(bus.publish, trust_of)
    report(events.PeerConnected(ME, "127.0.0.1:5", "inbound"))
    report(events.PeerDisconnected(ME, "closed"))
    report(events.PeerConnected(A, "127.0.0.1:6", "inbound"))
    assert [e.event for e in bus.recorded()] == [events.PeerConnected(A, "127.0.0.1:6", "inbound")]


async def test_the_heap_is_trimmed_once_after_peers_leave_and_not_before(
    autojump_clock: trio.testing.MockClock,
) -> None:
    trims: list[str] = []

    async def trim() -> None:
        trims.append("trim")

    heap = HeapTrim(trim)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(heap.serve)
        heap.observe(events.PeerConnected(A, "127.0.0.1:6", "inbound"))
        await trio.sleep(10 * HeapTrim.SETTLE_S)
        assert trims == []  # a peer arriving frees nothing
        for peer in (A, B, C):  # a burst of departures
            heap.observe(events.PeerDisconnected(peer, "closed"))
        await trio.sleep(HeapTrim.SETTLE_S / 2)
        assert trims == []  # the connections' tasks get time to drop their buffers
        await trio.sleep(10 * HeapTrim.SETTLE_S)
        assert len(trims) == 1
        heap.observe(events.PeerDisconnected(A, "closed"))
        await trio.sleep(10 * HeapTrim.SETTLE_S)
        assert len(trims) == 2
        nursery.cancel_scope.cancel()


class StuckFinder:
    """A finder whose search never ends (until cancelled)."""

    async def find(self, cid: Cid) -> list[FakeConn]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def known(self, cid: Cid) -> list[FakeConn]:
        return []


async def test_a_cancelled_fetch_is_an_event_of_its_own_not_a_failure(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "data")
    bus = EventBus()
    counters = events.Counters()
    bus.subscribe(counters.observe)
    manager = TransferManager(
        AsyncStore(store), StuckFinder(), bus.publish,  # type: ignore[arg-type]
        lambda added, removed: None, max_concurrent=1,
    )  # fmt: skip
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:

                async def fetch() -> None:
                    with pytest.raises(ServiceError) as raised:
                        await manager.fetch(CID, None, False, lambda p: None)
                    assert raised.value.code == "unavailable"

                nursery.start_soon(fetch)
                while not any(isinstance(e.event, events.TransferStarted) for e in bus.recorded()):
                    await trio.sleep(0.01)  # polling, with the test's deadline
                assert manager.cancel(CID)
        ended = [e.event for e in bus.recorded()][1:]
        assert ended == [events.TransferCancelled(CID)]
        snap = counters.snapshot()
        assert (snap["transfers_active"], snap["transfers_failed"]) == (0, 0)
    finally:
        store.close()


def test_a_fetch_that_raised_reports_the_wire_code_its_caller_sees() -> None:
    from hearthfile.blobs.chunker import BlobError
    from hearthfile.transfer.manager import failed

    assert failed(CID, ServiceError("partition", "x")).code == "partition"
    assert failed(CID, BlobError("disk_full", "x")).code == "capacity_exceeded"
    assert failed(CID, PeerUnavailable("a", "gone")).code == "unavailable"
    bug = events.TransferFailed(CID, "internal", "RuntimeError")
    assert failed(CID, RuntimeError("bug")) == bug
