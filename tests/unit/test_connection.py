"""Call multiplexing over one connection (hearthfile/bus/connection.py), on in-memory channels.

Time is trio's MockClock with autojump (each test takes the ``autojump_clock`` fixture):
timeouts fire as soon as everything is blocked; every test runs under ``trio.fail_after``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from hearthfile.bus.capability import CallContext, CapabilityDescriptor, Registry, TrustLevel
from hearthfile.bus.connection import INTERNAL_MESSAGE, Connection
from hearthfile.bus.frames import (
    Credit,
    Data,
    End,
    ErrorResponse,
    Frame,
    Request,
    Response,
    decode,
    encode,
)
from hearthfile.bus.session import INITIAL_WINDOW, MAX_HELD_BYTES
from hearthfile.errors import PeerUnavailable, ServiceError
from hearthfile.identity import NodeId
from tests.unit.fake_channel import MemoryChannel, channel_pair

DEADLINE_S = 60


def cap(name: str, **overrides: Any) -> CapabilityDescriptor:
    fields: dict[str, Any] = {
        "name": name,
        "version": (1, 0),
        "trust_required": TrustLevel.MEMBER,
        "max_concurrent": 4,
        "timeout_seconds": 30.0,
    }
    fields.update(overrides)
    return CapabilityDescriptor(**fields)


async def echo(ctx: CallContext) -> Any:
    return ctx.args


def members(peer: NodeId) -> TrustLevel:
    return TrustLevel.MEMBER


@asynccontextmanager
async def connected(
    registry: Registry,
    *,
    caller_registry: Registry | None = None,
    trust_of: Callable[[NodeId], TrustLevel] = members,
) -> AsyncIterator[tuple[Connection, Connection]]:
    """(caller, callee): the caller dialed; the callee serves ``registry``."""
    dialer, acceptor = channel_pair()
    caller = Connection(dialer, caller_registry or Registry(), trust_of, initiator=True)
    callee = Connection(acceptor, registry, trust_of, initiator=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(caller.serve)
        await nursery.start(callee.serve)
        yield caller, callee
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def raw_peer(registry: Registry) -> AsyncIterator[tuple[Connection, MemoryChannel]]:
    """A served connection (the dialer) and the bare channel end a test speaks frames on."""
    dialer, acceptor = channel_pair()
    conn = Connection(dialer, registry, members, initiator=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.serve)
        yield conn, acceptor
        nursery.cancel_scope.cancel()


async def send_frame(channel: MemoryChannel, frame: Frame) -> None:
    await channel.send_message(encode(frame))


async def receive_frame(channel: MemoryChannel) -> Frame:
    return decode(await channel.receive_message())


# --- calls ---------------------------------------------------------------------------------


async def test_unary_call_returns_the_body(autojump_clock: trio.testing.MockClock) -> None:
    registry = Registry()
    registry.register(cap("test.echo"), echo)
    with trio.fail_after(DEADLINE_S):
        async with connected(registry) as (caller, _):
            assert await caller.call("test.echo", {"x": [1, b"\x00"]}) == {"x": [1, b"\x00"]}


async def test_thousand_concurrent_calls_in_both_directions(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = Registry()
    registry.register(cap("test.echo", max_concurrent=1000), echo)
    results: dict[str, list[Any]] = {"ab": [], "ba": []}

    async def one(conn: Connection, key: str, i: int) -> None:
        results[key].append(await conn.call("test.echo", i))

    with trio.fail_after(DEADLINE_S):
        async with connected(registry, caller_registry=registry) as (a, b):
            async with trio.open_nursery() as nursery:
                for i in range(1000):
                    nursery.start_soon(one, a, "ab", i)
                    nursery.start_soon(one, b, "ba", i)
            assert a.stats().calls_open == 0 and b.stats().handlers_running == 0
    assert sorted(results["ab"]) == list(range(1000))
    assert sorted(results["ba"]) == list(range(1000))


async def test_bus_describe_answers_strangers(autojump_clock: trio.testing.MockClock) -> None:
    registry = Registry()
    registry.register(cap("test.echo"), echo)
    with trio.fail_after(DEADLINE_S):
        async with connected(registry, trust_of=lambda _: TrustLevel.STRANGER) as (caller, _):
            described = await caller.call("bus.describe")
        async with connected(registry) as (member, _):
            as_member = await member.call("bus.describe")
    # A stranger is shown only what it may call; a member sees the member capability.
    assert [d["name"] for d in described] == ["bus.describe"]
    assert [d["name"] for d in as_member] == ["bus.describe", "test.echo"]
    assert as_member[1]["trust_required"] == "member"
    assert all(isinstance(d["timeout_seconds"], float) for d in as_member)


async def test_upload_stream_reaches_the_handler_with_credit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def total(ctx: CallContext) -> int:
        return sum([item async for item in ctx.incoming()])

    registry = Registry()
    registry.register(cap("test.sum"), total)
    with trio.fail_after(DEADLINE_S):
        async with connected(registry) as (caller, _), caller.open_call("test.sum") as call:
            for i in range(10 * INITIAL_WINDOW):
                await call.send(i)
            await call.send_end()
            assert await call.result() == sum(range(10 * INITIAL_WINDOW))


async def test_download_stream_then_end_then_result(autojump_clock: trio.testing.MockClock) -> None:
    async def count(ctx: CallContext) -> str:
        for i in range(ctx.args):
            await ctx.send({"i": i})
        return "done"

    registry = Registry()
    registry.register(cap("test.count"), count)
    with trio.fail_after(DEADLINE_S):
        async with connected(registry) as (caller, _), caller.open_call("test.count", 50) as call:
            items = [item["i"] async for item in call]
            assert await call.result() == "done"
    assert items == list(range(50))


async def test_slow_stream_does_not_stall_a_fast_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sent: dict[str, int] = {"slow": 0, "fast": 0}

    async def produce(ctx: CallContext) -> None:
        for i in range(100):
            await ctx.send(i)
            sent[ctx.args] += 1

    registry = Registry()
    registry.register(cap("test.produce"), produce)
    with trio.fail_after(DEADLINE_S):
        async with (
            connected(registry) as (caller, _),
            caller.open_call("test.produce", "slow") as slow,
        ):
            async with caller.open_call("test.produce", "fast") as fast:
                assert [item async for item in fast] == list(range(100))
                await fast.result()
            await trio.testing.wait_all_tasks_blocked()
            # The unread stream sent its window and waits for credit, nothing more.
            assert sent == {"slow": INITIAL_WINDOW, "fast": 100}
            assert [item async for item in slow] == list(range(100))
            await slow.result()


async def test_receiver_that_never_grants_credit_blocks_only_its_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def produce(ctx: CallContext) -> None:
        for i in range(100):
            await ctx.send(i)

    registry = Registry()
    registry.register(cap("test.produce"), produce)
    registry.register(cap("test.echo"), echo)
    with trio.fail_after(DEADLINE_S):
        async with raw_peer(registry) as (_, peer):
            await send_frame(peer, Request(2, "test.produce", (1, 0), None))
            await send_frame(peer, Request(4, "test.echo", (1, 0), "still here"))
            received: list[Frame] = []
            with trio.move_on_after(10):  # mock time: passes once everything is blocked
                while True:
                    received.append(await receive_frame(peer))
    assert Response(4, "still here") in received
    assert [f for f in received if isinstance(f, Data)] == [
        Data(2, i) for i in range(INITIAL_WINDOW)
    ]


async def test_sender_exceeding_credit_is_disconnected(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    released = trio.Event()

    async def never_reads(ctx: CallContext) -> None:
        try:
            await trio.sleep_forever()
        finally:
            released.set()

    registry = Registry()
    registry.register(cap("test.sink"), never_reads)
    with trio.fail_after(DEADLINE_S):
        async with raw_peer(registry) as (conn, peer):
            await send_frame(peer, Request(2, "test.sink", (1, 0), None))
            for i in range(INITIAL_WINDOW + 1):
                await send_frame(peer, Data(2, i))
            with pytest.raises(PeerUnavailable):
                while True:
                    await receive_frame(peer)
            await released.wait()
            assert conn.close_reason is not None and "credit" in conn.close_reason
    assert any("broke the bus protocol" in r.message for r in caplog.records)


async def test_garbage_from_the_peer_closes_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(DEADLINE_S):
        async with raw_peer(Registry()) as (conn, peer):
            await peer.send_message(b"\xc1 not msgpack")
            with pytest.raises(PeerUnavailable):
                await receive_frame(peer)
            assert conn.is_closed
            with pytest.raises(PeerUnavailable):
                await conn.call("test.echo")


async def test_frames_for_finished_calls_are_ignored(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = Registry()
    registry.register(cap("test.echo"), echo)
    with trio.fail_after(DEADLINE_S):
        async with raw_peer(registry) as (conn, peer):
            await send_frame(peer, Request(2, "test.echo", (1, 0), 1))
            assert await receive_frame(peer) == Response(2, 1)
            await send_frame(peer, Data(2, "late"))
            await send_frame(peer, End(2))
            await send_frame(peer, Credit(2, 3))
            await send_frame(peer, Request(4, "test.echo", (1, 0), 2))
            assert await receive_frame(peer) == Response(4, 2)
            assert not conn.is_closed


# --- cancellation --------------------------------------------------------------------------


def hanging_handler() -> tuple[Callable[[CallContext], Any], trio.Event, trio.Event]:
    started, released = trio.Event(), trio.Event()

    async def hang(ctx: CallContext) -> None:
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            released.set()

    return hang, started, released


async def test_caller_cancellation_frees_the_handler(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hang, started, released = hanging_handler()
    registry = Registry()
    registry.register(cap("test.hang"), hang)
    with trio.fail_after(DEADLINE_S):
        async with connected(registry) as (caller, callee):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(caller.call, "test.hang")
                await started.wait()
                nursery.cancel_scope.cancel()  # the caller gives up mid-call
            await released.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert callee.stats().handlers_running == 0
            assert caller.stats().calls_open == 0
            assert await caller.call("bus.describe")  # the connection is still fine


async def test_a_handler_sending_after_its_caller_left_is_cancelled_not_failed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The caller cancels while the handler is busy (shielded here); the handler's next
    send must end it with Cancelled, not a protocol error logged as internal."""
    sent_one, go, ended = trio.Event(), trio.Event(), trio.Event()
    seen: list[type[BaseException]] = []

    async def stream(ctx: CallContext) -> None:
        await ctx.send(0)
        sent_one.set()
        try:
            with trio.CancelScope(shield=True):
                await go.wait()
            await ctx.send(1)
        except BaseException as exc:
            seen.append(type(exc))
            raise
        finally:
            ended.set()

    registry = Registry()
    registry.register(cap("test.stream"), stream)
    with trio.fail_after(DEADLINE_S):
        async with connected(registry) as (caller, callee):
            async with caller.open_call("test.stream") as call:
                async for _ in call:
                    break
                await sent_one.wait()
            await trio.testing.wait_all_tasks_blocked()  # the cancel has reached the callee
            go.set()
            await ended.wait()
            assert seen == [trio.Cancelled]
            await trio.testing.wait_all_tasks_blocked()
            assert callee.stats().handlers_running == 0


async def test_caller_timeout_cancels_the_call(autojump_clock: trio.testing.MockClock) -> None:
    hang, _, released = hanging_handler()
    registry = Registry()
    registry.register(cap("test.hang"), hang)
    with trio.fail_after(DEADLINE_S):
        async with connected(registry) as (caller, callee):
            with pytest.raises(ServiceError) as failure:
                await caller.call("test.hang", timeout_s=5)
            assert failure.value.code == "timeout"
            await released.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert callee.stats().handlers_running == 0


async def test_callee_closing_frees_the_handler_and_fails_the_caller(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hang, started, released = hanging_handler()
    registry = Registry()
    registry.register(cap("test.hang"), hang)
    outcome: list[BaseException] = []

    async def call() -> None:
        try:
            await caller.call("test.hang")
        except PeerUnavailable as exc:
            outcome.append(exc)

    with trio.fail_after(DEADLINE_S):
        async with connected(registry) as (caller, callee):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(call)
                await started.wait()
                await callee.aclose()
            await released.wait()
    assert len(outcome) == 1


# --- admission and failures ----------------------------------------------------------------


async def expect_error(conn: Connection, code: str, name: str, **kwargs: Any) -> ServiceError:
    with pytest.raises(ServiceError) as failure:
        await conn.call(name, **kwargs)
    assert failure.value.code == code
    return failure.value


async def test_stranger_calling_a_member_capability_is_unauthorized(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = Registry()
    registry.register(cap("test.echo"), echo)
    level = {"now": TrustLevel.STRANGER}
    with trio.fail_after(DEADLINE_S):
        async with connected(registry, trust_of=lambda _: level["now"]) as (caller, _):
            await expect_error(caller, "unauthorized", "test.echo")
            level["now"] = TrustLevel.MEMBER  # trust changes apply to the next call
            assert await caller.call("test.echo", 1) == 1


async def test_unknown_capability_is_not_found(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(DEADLINE_S):
        async with connected(Registry()) as (caller, _):
            await expect_error(caller, "not_found", "test.nothing")


async def test_major_version_mismatch_is_bad_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = Registry()
    registry.register(cap("test.echo", version=(1, 3)), echo)
    with trio.fail_after(DEADLINE_S):
        async with connected(registry) as (caller, _):
            error = await expect_error(caller, "bad_request", "test.echo", version=(2, 0))
            assert "2.0" in error.detail and "1.3" in error.detail
            assert await caller.call("test.echo", "ok", version=(1, 9)) == "ok"


async def test_exceeding_max_concurrent_is_busy(autojump_clock: trio.testing.MockClock) -> None:
    hang, started, _ = hanging_handler()
    registry = Registry()
    registry.register(cap("test.hang", max_concurrent=1), hang)
    with trio.fail_after(DEADLINE_S):
        async with connected(registry) as (caller, _), trio.open_nursery() as nursery:
            nursery.start_soon(lambda: caller.call("test.hang"))
            await started.wait()
            await expect_error(caller, "busy", "test.hang")
            nursery.cancel_scope.cancel()


async def test_callee_timeout_answers_timeout(autojump_clock: trio.testing.MockClock) -> None:
    hang, _, released = hanging_handler()
    registry = Registry()
    registry.register(cap("test.hang", timeout_seconds=3.0), hang)
    with trio.fail_after(DEADLINE_S):
        async with connected(registry) as (caller, _):
            await expect_error(caller, "timeout", "test.hang")
            assert released.is_set()


async def test_service_error_passes_its_code_and_detail(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def refuse(ctx: CallContext) -> None:
        raise ServiceError("capacity_exceeded", "disk nearly full")

    registry = Registry()
    registry.register(cap("test.refuse"), refuse)
    with trio.fail_after(DEADLINE_S):
        async with connected(registry) as (caller, _):
            error = await expect_error(caller, "capacity_exceeded", "test.refuse")
    assert error.detail == "disk nearly full"


async def test_handler_exception_is_internal_without_its_text(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def crash(ctx: CallContext) -> None:
        raise RuntimeError("secret path /home/alice")

    registry = Registry()
    registry.register(cap("test.crash"), crash)
    with trio.fail_after(DEADLINE_S), caplog.at_level(logging.ERROR):
        async with connected(registry) as (caller, _):
            error = await expect_error(caller, "internal", "test.crash")
    assert error.detail == INTERNAL_MESSAGE and "secret" not in str(error)
    assert any(r.exc_info and "secret" in str(r.exc_info[1]) for r in caplog.records)


async def test_unencodable_result_is_internal(autojump_clock: trio.testing.MockClock) -> None:
    async def odd(ctx: CallContext) -> object:
        return {1, 2}

    registry = Registry()
    registry.register(cap("test.odd"), odd)
    with trio.fail_after(DEADLINE_S):
        async with connected(registry) as (caller, _):
            await expect_error(caller, "internal", "test.odd")


async def test_error_mid_stream_comes_after_the_items(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def fail_later(ctx: CallContext) -> None:
        await ctx.send(1)
        await ctx.send(2)
        raise ServiceError("not_found", "chunk 3 is missing")

    registry = Registry()
    registry.register(cap("test.fail"), fail_later)
    items: list[Any] = []
    with trio.fail_after(DEADLINE_S):
        async with connected(registry) as (caller, _), caller.open_call("test.fail") as call:
            with pytest.raises(ServiceError, match="chunk 3"):
                async for item in call:
                    items.append(item)
    assert items == [1, 2]


async def test_push_refused_early_stops_the_sender(autojump_clock: trio.testing.MockClock) -> None:
    async def refuse_push(ctx: CallContext) -> None:
        raise ServiceError("capacity_exceeded", "no room")

    registry = Registry()
    registry.register(cap("test.push"), refuse_push)
    with trio.fail_after(DEADLINE_S):
        async with connected(registry) as (caller, _), caller.open_call("test.push") as call:
            with pytest.raises(ServiceError, match="no room"):
                for i in range(100 * INITIAL_WINDOW):
                    await call.send(i)


async def test_call_after_close_is_peer_unavailable(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(DEADLINE_S):
        async with connected(Registry()) as (caller, callee):
            await callee.aclose()
            with pytest.raises(PeerUnavailable):
                await caller.call("bus.describe")


async def test_error_frame_codes_stay_in_the_wire_set(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = Registry()
    with trio.fail_after(DEADLINE_S):
        async with raw_peer(registry) as (_, peer):
            await send_frame(peer, Request(2, "nope.nope", (1, 0), None))
            reply = await receive_frame(peer)
    assert isinstance(reply, ErrorResponse) and reply.code == "not_found"


async def test_a_peer_filling_every_window_holds_at_most_the_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A peer that opens many streaming calls and fills each window while the handlers
    never read: we hold at most MAX_HELD_BYTES of it, the excess calls end ``busy``, and
    everything held is released when the calls end."""
    registry = Registry()
    holding = trio.Event()

    async def sink(ctx: CallContext) -> None:
        await holding.wait()

    registry.register(cap("test.sink", max_concurrent=100), sink)
    chunk = b"x" * (256 * 1024)
    calls = MAX_HELD_BYTES // (INITIAL_WINDOW * len(chunk)) + 3
    peak = 0
    received: list[Frame] = []
    with trio.fail_after(DEADLINE_S):
        async with raw_peer(registry) as (conn, peer):

            async def read() -> None:
                while True:
                    received.append(await receive_frame(peer))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                for n in range(calls):
                    await send_frame(peer, Request(2 + 2 * n, "test.sink", (1, 0), None))
                    for _ in range(INITIAL_WINDOW):
                        await send_frame(peer, Data(2 + 2 * n, chunk))
                        peak = max(peak, conn.stats().held_bytes)
                await trio.sleep(1)  # mock time: everything sent is processed
                busy = [f for f in received if isinstance(f, ErrorResponse)]
                assert busy and all(f.code == "busy" for f in busy)
                holding.set()
                await trio.sleep(1)
                nursery.cancel_scope.cancel()
            assert conn.stats().held_bytes == 0
    assert 0 < peak <= MAX_HELD_BYTES
    assert len({f.call_id for f in received if isinstance(f, Response)}) + len(busy) == calls


async def test_lowered_trust_stops_running_calls_it_no_longer_admits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hang, started, released = hanging_handler()
    registry = Registry()
    registry.register(cap("test.hang"), hang)
    level = {"now": TrustLevel.MEMBER}
    with trio.fail_after(DEADLINE_S):
        async with connected(registry, trust_of=lambda _: level["now"]) as (caller, callee):
            assert callee.enforce_trust() == 0  # nothing running yet
            async with trio.open_nursery() as nursery:
                nursery.start_soon(expect_error, caller, "unauthorized", "test.hang")
                await started.wait()
                level["now"] = TrustLevel.STRANGER
                assert callee.enforce_trust() == 1
            await released.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert callee.stats().handlers_running == 0
            await expect_error(caller, "unauthorized", "test.hang")
            assert await caller.call("bus.describe")  # the connection itself stays


# --- errors raised inside a handler's nursery (issue 13 item 7) ------------------------------


async def fails_in_a_task(ctx: CallContext) -> Any:
    async def task() -> None:
        raise ServiceError("partition", "chunk 3 failed 5 times")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(task)
    return None


async def breaks_in_a_task(ctx: CallContext) -> Any:
    async def task() -> None:
        raise KeyError("a bug")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(task)
    return None


async def test_a_service_error_in_a_nursery_reaches_the_caller_as_itself(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = Registry()
    registry.register(cap("t.fail"), fails_in_a_task)
    registry.register(cap("t.bug"), breaks_in_a_task)
    with trio.fail_after(DEADLINE_S):
        async with connected(registry) as (caller, _):
            with pytest.raises(ServiceError) as info:
                await caller.call("t.fail")
            assert (info.value.code, info.value.detail) == ("partition", "chunk 3 failed 5 times")
            with pytest.raises(ServiceError) as info:
                await caller.call("t.bug")
            assert (info.value.code, info.value.detail) == ("internal", INTERNAL_MESSAGE)
