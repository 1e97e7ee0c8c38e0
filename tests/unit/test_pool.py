"""The peer pool (hearthfile/bus/pool.py) over in-memory channels and a fake dialer."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from hearthfile.bus.capability import Registry, TrustLevel
from hearthfile.bus.channel import ChannelLimits, MessageChannel
from hearthfile.bus.connection import Connection
from hearthfile.bus.pool import PeerConnected, PeerDisconnected, PeerEvent, PeerPool
from hearthfile.config import Address
from hearthfile.errors import PeerUnavailable
from hearthfile.identity import NodeId, NodeKey
from tests.unit.fake_channel import channel_pair

DEADLINE_S = 600


def members(peer: NodeId) -> TrustLevel:
    return TrustLevel.MEMBER


class FakeNetwork:
    """Nodes by address; a dial starts the remote side's ``Connection`` in ``nursery``."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.nodes: dict[Address, NodeId] = {}
        self.down: set[Address] = set()
        self.dials = 0
        self.dialed = trio.Event()  # replaced after each attempt
        self.remote_conns: list[Connection] = []

    def add(self, address: Address) -> NodeId:
        node = NodeKey.generate().node_id
        self.nodes[address] = node
        return node

    @asynccontextmanager
    async def dial(
        self,
        address: Address,
        node_key: NodeKey,
        *,
        expected_peer: NodeId | None = None,
        limits: ChannelLimits | None = None,
    ) -> AsyncIterator[MessageChannel]:
        self.dials += 1
        self.dialed.set()
        self.dialed = trio.Event()
        await trio.sleep(0.1)  # dialing takes time, so concurrent gets overlap
        remote = self.nodes.get(address)
        if remote is None or address in self.down:
            raise PeerUnavailable(str(address), "connection refused")
        if expected_peer is not None and expected_peer != remote:
            raise PeerUnavailable(str(address), "another node answered")
        local_end, remote_end = channel_pair(node_key.node_id, remote)
        conn = Connection(remote_end, Registry(), members, initiator=False)
        self.remote_conns.append(conn)
        await self.nursery.start(conn.serve)
        try:
            yield local_end
        finally:
            await local_end.aclose()


@asynccontextmanager
async def running_pool(**kwargs: Any) -> AsyncIterator[tuple[PeerPool, FakeNetwork]]:
    async with trio.open_nursery() as nursery:
        network = FakeNetwork(nursery)
        pool = PeerPool(
            NodeKey.generate(),
            Registry(),
            members,
            dial=network.dial,
            rng=random.Random(7),
            **kwargs,
        )
        await nursery.start(pool.serve)
        yield pool, network
        nursery.cancel_scope.cancel()


async def test_concurrent_gets_share_one_dial(autojump_clock: trio.testing.MockClock) -> None:
    got: list[Connection] = []
    with trio.fail_after(DEADLINE_S):
        async with running_pool() as (pool, network):
            node = network.add(Address("10.0.0.1", 1))

            async def get() -> None:
                got.append(await pool.get(node, Address("10.0.0.1", 1)))

            async with trio.open_nursery() as nursery:
                for _ in range(10):
                    nursery.start_soon(get)
            assert network.dials == 1
            assert len({id(c) for c in got}) == 1
            assert await got[0].call("bus.describe")
            assert await pool.get(node) is got[0]  # the address is remembered
            [row] = pool.connections()
            assert (row.peer, row.direction, row.remote) == (node, "outbound", "10.0.0.1:1")
            assert row.bytes_in > 0 and row.bytes_out > 0


async def test_unknown_peer_without_address_is_unavailable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(DEADLINE_S):
        async with running_pool() as (pool, _):
            with pytest.raises(PeerUnavailable, match="no known address"):
                await pool.get(NodeKey.generate().node_id)


async def test_failed_dial_fails_every_waiter(autojump_clock: trio.testing.MockClock) -> None:
    failures: list[PeerUnavailable] = []
    with trio.fail_after(DEADLINE_S):
        async with running_pool() as (pool, network):
            address = Address("10.0.0.2", 1)
            node = network.add(address)
            network.down.add(address)

            async def get() -> None:
                try:
                    await pool.get(node, address)
                except PeerUnavailable as exc:
                    failures.append(exc)

            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(get)
            assert network.dials == 1 and len(failures) == 3
            assert pool.connections() == []


async def test_inbound_connection_is_used_without_dialing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(DEADLINE_S):
        async with running_pool() as (pool, network), trio.open_nursery() as nursery:
            remote = NodeKey.generate().node_id
            accepted, dialer_end = channel_pair(b=remote)  # the pool's end, talking to remote
            dialer = Connection(dialer_end, Registry(), members, initiator=True)
            nursery.start_soon(pool.serve_inbound, accepted)
            await nursery.start(dialer.serve)
            await trio.testing.wait_all_tasks_blocked()
            conn = await pool.get(remote)
            assert network.dials == 0
            assert await conn.call("bus.describe")
            assert [row.direction for row in pool.connections()] == ["inbound"]
            await dialer.aclose()
            await conn.wait_closed()
            await trio.testing.wait_all_tasks_blocked()
            assert pool.connections() == []


async def test_connections_per_peer_are_bounded(autojump_clock: trio.testing.MockClock) -> None:
    remote = NodeKey.generate().node_id
    with trio.fail_after(DEADLINE_S):
        limits = ChannelLimits(max_connections_per_peer=1)
        async with running_pool(limits=limits) as (pool, _), trio.open_nursery() as nursery:
            first, _keep_open = channel_pair(b=remote)
            nursery.start_soon(pool.serve_inbound, first)
            await trio.testing.wait_all_tasks_blocked()
            second, _ = channel_pair(b=remote)
            with pytest.raises(PeerUnavailable, match="too many"):
                await pool.serve_inbound(second)
            assert len(pool.connections()) == 1
            nursery.cancel_scope.cancel()


async def test_persistent_peer_is_redialed_with_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events: list[PeerEvent] = []
    changed = trio.Event()

    def record(event: PeerEvent) -> None:
        nonlocal changed
        events.append(event)
        changed.set()
        changed = trio.Event()

    async def wait_for(count: int) -> None:
        while len(events) < count:
            await changed.wait()

    address = Address("10.0.0.3", 1)
    with trio.fail_after(DEADLINE_S):
        async with running_pool(on_event=record) as (pool, network):
            node = network.add(address)
            network.down.add(address)
            pool.keep_connected(address)  # bootstrap: NodeID not known yet
            while network.dials < 3:  # two refusals, backing off, then the third try
                await network.dialed.wait()
            network.down.clear()
            await wait_for(1)
            assert events[0] == PeerConnected(node, "10.0.0.3:1", "outbound")
            await network.remote_conns[-1].aclose()  # the peer restarts
            await wait_for(3)
            assert isinstance(events[1], PeerDisconnected) and events[1].peer == node
            assert events[2] == PeerConnected(node, "10.0.0.3:1", "outbound")
            assert pool.connection(node) is not None
