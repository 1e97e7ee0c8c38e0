"""The call layer over real encrypted loopback connections: server, client, pool.

A server runs ``serve_secure`` with ``PeerPool.serve_inbound`` as its handler; clients
dial with ``open_secure_channel`` through their own pool. Real clock, real sockets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio

from hearthfile.bus.capability import CallContext, CapabilityDescriptor, Registry, TrustLevel
from hearthfile.bus.pool import PeerConnected, PeerDisconnected, PeerEvent, PeerPool
from hearthfile.bus.server import serve_secure
from hearthfile.config import Address
from hearthfile.errors import ServiceError
from hearthfile.identity import NodeId, NodeKey

LOCALHOST = "127.0.0.1"
#: Every test finishes far sooner; this only turns a hang into a failure.
TEST_DEADLINE_S = 30
CHUNK = bytes(range(256)) * 1024  # 256 KiB


def server_registry() -> Registry:
    async def echo(ctx: CallContext) -> Any:
        return ctx.args

    async def chunks(ctx: CallContext) -> int:
        for i in range(ctx.args):
            await ctx.send({"i": i, "data": CHUNK})
        return int(ctx.args)

    registry = Registry()
    member: dict[str, Any] = {
        "trust_required": TrustLevel.MEMBER,
        "version": (1, 0),
        "timeout_seconds": 10.0,
    }
    registry.register(CapabilityDescriptor(name="test.echo", max_concurrent=64, **member), echo)
    registry.register(CapabilityDescriptor(name="test.chunks", max_concurrent=4, **member), chunks)
    return registry


def trusting(*members: NodeId) -> Callable[[NodeId], TrustLevel]:
    return lambda peer: TrustLevel.MEMBER if peer in members else TrustLevel.STRANGER


@asynccontextmanager
async def bus_server(
    key: NodeKey, trust_of: Callable[[NodeId], TrustLevel], port: int = 0
) -> AsyncIterator[Address]:
    """A server on 127.0.0.1 until the block ends; yields its address."""
    async with trio.open_nursery() as nursery:
        pool = PeerPool(key, server_registry(), trust_of)
        await nursery.start(pool.serve)
        bound = await nursery.start(
            partial(serve_secure, Address(LOCALHOST, port), key, pool.serve_inbound)
        )
        yield Address(LOCALHOST, bound)
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def client_pool(
    key: NodeKey, on_event: Callable[[PeerEvent], None] | None = None
) -> AsyncIterator[PeerPool]:
    async with trio.open_nursery() as nursery:
        pool = PeerPool(key, Registry(), lambda _: TrustLevel.STRANGER, on_event=on_event)
        await nursery.start(pool.serve)
        yield pool
        nursery.cancel_scope.cancel()


async def test_client_calls_bus_describe_and_a_capability() -> None:
    server_key, client_key = NodeKey.generate(), NodeKey.generate()
    with trio.fail_after(TEST_DEADLINE_S):
        async with (
            bus_server(server_key, trusting(client_key.node_id)) as address,
            client_pool(client_key) as pool,
        ):
            conn = await pool.get(server_key.node_id, address)
            described = await conn.call("bus.describe")
            assert [d["name"] for d in described] == ["bus.describe", "test.chunks", "test.echo"]
            assert await conn.call("test.echo", {"b": b"\x00\x01"}) == {"b": b"\x00\x01"}
            [row] = pool.connections()
            assert row.direction == "outbound" and row.peer == server_key.node_id


async def test_stranger_is_refused_over_the_wire() -> None:
    server_key, client_key = NodeKey.generate(), NodeKey.generate()
    with trio.fail_after(TEST_DEADLINE_S):
        async with bus_server(server_key, trusting()) as address, client_pool(client_key) as pool:
            conn = await pool.get(server_key.node_id, address)
            assert await conn.call("bus.describe")
            with pytest.raises(ServiceError) as failure:
                await conn.call("test.echo", 1)
            assert failure.value.code == "unauthorized"


async def test_chunks_stream_through_the_encrypted_channel() -> None:
    server_key, client_key = NodeKey.generate(), NodeKey.generate()
    with trio.fail_after(TEST_DEADLINE_S):
        async with (
            bus_server(server_key, trusting(client_key.node_id)) as address,
            client_pool(client_key) as pool,
        ):
            conn = await pool.get(server_key.node_id, address)
            async with conn.open_call("test.chunks", 40) as call:
                indices = []
                async for item in call:
                    assert item["data"] == CHUNK
                    indices.append(item["i"])
                assert await call.result() == 40
            assert indices == list(range(40))


async def test_pool_reconnects_after_the_server_restarts() -> None:
    server_key, client_key = NodeKey.generate(), NodeKey.generate()
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

    trust = trusting(client_key.node_id)
    with trio.fail_after(TEST_DEADLINE_S):
        async with client_pool(client_key, on_event=record) as pool:
            async with bus_server(server_key, trust) as address:
                pool.keep_connected(address)
                await wait_for(1)
                assert isinstance(events[0], PeerConnected)
            await wait_for(2)  # the server went away
            assert isinstance(events[1], PeerDisconnected)
            async with bus_server(server_key, trust, port=address.port):
                await wait_for(3)
                assert isinstance(events[2], PeerConnected)
                conn = await pool.get(server_key.node_id)
                assert await conn.call("test.echo", "back") == "back"
