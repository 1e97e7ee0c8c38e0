"""The secure channel over real loopback sockets: handshake, limits, hostile peers.

Well-behaved peers are ``open_secure_channel``; hostile ones are ``RawPeer``,
which speaks websocket through wsproto by hand so it can send text, garbage,
oversize messages, or stay silent and never answer a ping.
"""

from __future__ import annotations

import logging
import os
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

from hearthfile.bus.capability import Registry, TrustLevel
from hearthfile.bus.channel import ChannelLimits
from hearthfile.bus.client import (
    CLOSE_BAD_FRAME,
    CLOSE_HANDSHAKE_FAILED,
    CLOSE_HANDSHAKE_TIMEOUT,
    CLOSE_IDLE_TIMEOUT,
    CLOSE_INTERNAL_ERROR,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_PROTOCOL_VIOLATION,
    CLOSE_TEXT_MESSAGE,
    CLOSE_TOO_MANY_CONNECTIONS,
    DEFAULT_LIMITS,
    WEBSOCKET_PATH,
    SecureChannel,
    open_secure_channel,
)
from hearthfile.bus.connection import Connection
from hearthfile.bus.handshake import Handshake, HandshakeError, SecureSession
from hearthfile.bus.server import serve_secure
from hearthfile.config import Address
from hearthfile.errors import HearthError, PeerUnavailable, RemoteProtocolError
from hearthfile.identity import NodeKey

SERVER_KEY = NodeKey.generate()
CLIENT_KEY = NodeKey.generate()
LOCALHOST = "127.0.0.1"
#: Every test finishes far sooner; this only turns a hang into a failure.
TEST_DEADLINE_S = 20


class Outcomes:
    """What the server's handler saw, one entry per channel, in order of ending."""

    def __init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[tuple[str, object]](1000)

    async def next(self) -> tuple[str, object]:
        with trio.fail_after(TEST_DEADLINE_S):
            return await self.receive.receive()


def echo_handler(outcomes: Outcomes) -> Callable[[SecureChannel], Awaitable[None]]:
    async def handler(channel: SecureChannel) -> None:
        await outcomes.send.send(("connected", channel.peer))
        try:
            while True:
                message = await channel.receive_message()
                await channel.send_message(message)
        except HearthError as exc:
            await outcomes.send.send(("ended", exc))
            raise

    return handler


@asynccontextmanager
async def server(
    handler: Callable[[SecureChannel], Awaitable[None]], limits: ChannelLimits = DEFAULT_LIMITS
) -> AsyncIterator[Address]:
    with trio.fail_after(TEST_DEADLINE_S):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                lambda task_status: serve_secure(
                    Address(LOCALHOST, 0),
                    SERVER_KEY,
                    handler,
                    limits=limits,
                    task_status=task_status,
                )
            )
            yield Address(LOCALHOST, port)
            nursery.cancel_scope.cancel()


class RawPeer:
    """A websocket client driven by hand, for behaviour a real peer never shows."""

    def __init__(
        self, stream: trio.SocketStream, role: ConnectionType = ConnectionType.CLIENT
    ) -> None:
        self.stream = stream
        self.ws = WSConnection(role)
        self._events: deque[Event] = deque()
        self.session: SecureSession | None = None

    @classmethod
    async def connect(cls, address: Address) -> RawPeer:
        return cls(await trio.open_tcp_stream(address.host, address.port))

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def upgrade(self, path: str = WEBSOCKET_PATH) -> Event | None:
        await self.send(Request(host=LOCALHOST, target=path))
        return await self.next_event()

    async def next_event(self) -> Event | None:
        """The next websocket event, or None at EOF. Pings are seen, never answered."""
        while not self._events:
            data = await self.stream.receive_some(1 << 16)
            if not data:
                return None
            self.ws.receive_data(data)
            self._events.extend(self.ws.events())
        return self._events.popleft()

    async def receive_binary(self) -> bytes:
        parts = []
        while True:
            event = await self.next_event()
            if isinstance(event, Ping):
                continue
            assert isinstance(event, BytesMessage), event
            parts.append(event.data)
            if event.message_finished:
                return b"".join(parts)

    async def handshake(self, node_key: NodeKey = CLIENT_KEY) -> SecureSession:
        assert isinstance(await self.upgrade(), AcceptConnection)
        return await self.secure(Handshake(initiator=True, node_key=node_key))

    async def secure(self, handshake: Handshake) -> SecureSession:
        while not handshake.complete:
            if handshake.wants_write:
                await self.send(Message(data=handshake.write_message()))
            else:
                handshake.read_message(await self.receive_binary())
        self.session = handshake.session(ChannelLimits().max_message_bytes)
        return self.session

    async def close_event(self) -> CloseConnection | None:
        """Read until the server closes: its close event (answered, as a polite
        peer does), or None if TCP just ended."""
        while True:
            event = await self.next_event()
            if event is None:
                return None
            if isinstance(event, CloseConnection):
                await self.send(event.response())
                return event

    async def close_code(self) -> int | None:
        event = await self.close_event()
        return None if event is None else event.code


async def test_handshake_both_ways_and_frames_of_every_size() -> None:
    outcomes = Outcomes()
    async with server(echo_handler(outcomes)) as address:
        async with open_secure_channel(
            address, CLIENT_KEY, expected_peer=SERVER_KEY.node_id
        ) as channel:
            assert channel.peer == SERVER_KEY.node_id
            assert await outcomes.next() == ("connected", CLIENT_KEY.node_id)
            for size in (0, 1, 65519, 65520, 256 * 1024, ChannelLimits().max_message_bytes):
                frame = os.urandom(size)
                await channel.send_message(frame)
                assert await channel.receive_message() == frame
        kind, error = await outcomes.next()
        assert kind == "ended" and isinstance(error, PeerUnavailable)


async def test_dialer_rejects_an_unexpected_node_id() -> None:
    outcomes = Outcomes()
    async with server(echo_handler(outcomes)) as address:
        with pytest.raises(HandshakeError, match="unexpected node id"):
            async with open_secure_channel(
                address, CLIENT_KEY, expected_peer=NodeKey.generate().node_id
            ):
                pytest.fail("the channel must not open")
        # The server never handed that connection to its handler: the next
        # handler call is for this good client.
        async with open_secure_channel(address, CLIENT_KEY):
            assert await outcomes.next() == ("connected", CLIENT_KEY.node_id)


@pytest.mark.parametrize("error", [KeyError("mine"), OSError("my own disk")])
async def test_body_exceptions_come_out_as_they_are(error: Exception) -> None:
    async with server(echo_handler(Outcomes())) as address:
        with pytest.raises(type(error)) as caught:
            async with open_secure_channel(address, CLIENT_KEY):
                raise error
        assert caught.value is error


async def test_garbage_instead_of_http_is_answered_400_and_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outcomes = Outcomes()
    async with server(echo_handler(outcomes)) as address:
        stream = await trio.open_tcp_stream(address.host, address.port)
        await stream.send_all(b"\x16\x03\x01 this is not http\r\n\r\n")
        received = b""
        while chunk := await stream.receive_some():
            received += chunk
        assert received.startswith(b"HTTP/1.1 400")
        await stream.aclose()
        async with open_secure_channel(address, CLIENT_KEY) as channel:
            await channel.send_message(b"still serving")
            assert await channel.receive_message() == b"still serving"
    assert any("other than a websocket upgrade" in r.message for r in caplog.records)


async def test_unknown_path_is_refused_with_404() -> None:
    async with server(echo_handler(Outcomes())) as address:
        peer = await RawPeer.connect(address)
        event = await peer.upgrade("/somewhere/else")
        assert isinstance(event, RejectConnection) and event.status_code == 404


@pytest.mark.parametrize(
    ("first_message", "reason"),
    [
        (Message(data=b"short"), "message 1 must be exactly the 32-byte ephemeral key"),
        (TextMessage(data="hello"), "text message during the handshake"),
    ],
)
async def test_bad_first_handshake_message_closes_4001(first_message: Message, reason: str) -> None:
    async with server(echo_handler(Outcomes())) as address:
        peer = await RawPeer.connect(address)
        assert isinstance(await peer.upgrade(), AcceptConnection)
        await peer.send(first_message)
        event = await peer.close_event()
        assert event is not None
        assert (event.code, event.reason) == (CLOSE_HANDSHAKE_FAILED, reason)


async def test_text_message_after_the_handshake_closes_1003() -> None:
    outcomes = Outcomes()
    async with server(echo_handler(outcomes)) as address:
        peer = await RawPeer.connect(address)
        await peer.handshake()
        assert (await outcomes.next())[0] == "connected"
        await peer.send(TextMessage(data="hello"))
        assert await peer.close_code() == CLOSE_TEXT_MESSAGE
        _, error = await outcomes.next()
        assert isinstance(error, RemoteProtocolError) and "text message" in str(error)


async def test_undecryptable_frame_closes_4003() -> None:
    outcomes = Outcomes()
    async with server(echo_handler(outcomes)) as address:
        peer = await RawPeer.connect(address)
        await peer.handshake()
        await peer.send(Message(data=b"\x00\x20" + os.urandom(32)))
        assert await peer.close_code() == CLOSE_BAD_FRAME
        await outcomes.next()
        _, error = await outcomes.next()
        assert isinstance(error, RemoteProtocolError) and "authentication" in str(error)


async def test_a_bus_protocol_violation_closes_4006() -> None:
    """A well-encrypted frame that breaks the bus protocol (here: not msgpack) is not a
    normal close: the connection says 4006 and why."""
    closed = trio.Event()

    async def bus(channel: SecureChannel) -> None:
        await Connection(channel, Registry(), lambda _: TrustLevel.MEMBER, initiator=False).serve()
        closed.set()

    async with server(bus) as address:
        peer = await RawPeer.connect(address)
        session = await peer.handshake()
        await peer.send(Message(data=session.encrypt_frame(b"\xc1 not msgpack")))
        event = await peer.close_event()
        assert event is not None and event.code == CLOSE_PROTOCOL_VIOLATION
        assert event.reason.startswith("undecodable frame"), event.reason
        with trio.fail_after(TEST_DEADLINE_S):
            await closed.wait()


async def test_oversize_message_closes_1009() -> None:
    outcomes = Outcomes()
    limits = ChannelLimits(max_message_bytes=1000)
    async with server(echo_handler(outcomes), limits) as address:
        peer = await RawPeer.connect(address)
        session = await peer.handshake()
        await peer.send(Message(data=session.encrypt_frame(b"fits")))
        assert session.decrypt_frame(await peer.receive_binary()) == b"fits"
        await peer.send(Message(data=os.urandom(5000)))
        assert await peer.close_code() == CLOSE_MESSAGE_TOO_BIG
        await outcomes.next()
        _, error = await outcomes.next()
        assert isinstance(error, RemoteProtocolError) and "1009" in str(error)


async def test_silent_tcp_client_is_dropped_at_the_handshake_timeout() -> None:
    limits = ChannelLimits(handshake_timeout_s=0.2)
    async with server(echo_handler(Outcomes()), limits) as address:
        stream = await trio.open_tcp_stream(address.host, address.port)
        assert await stream.receive_some() == b""  # the server hung up


async def test_silent_websocket_client_is_closed_4002() -> None:
    limits = ChannelLimits(handshake_timeout_s=0.2)
    async with server(echo_handler(Outcomes()), limits) as address:
        peer = await RawPeer.connect(address)
        assert isinstance(await peer.upgrade(), AcceptConnection)
        assert await peer.close_code() == CLOSE_HANDSHAKE_TIMEOUT


async def test_dialer_gives_up_on_a_silent_server() -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        listener = (await trio.open_tcp_listeners(0, host=LOCALHOST))[0]
        port = listener.socket.getsockname()[1]
        limits = ChannelLimits(handshake_timeout_s=0.2)
        with pytest.raises(PeerUnavailable, match=r"no handshake within 0\.2s"):
            async with open_secure_channel(Address(LOCALHOST, port), CLIENT_KEY, limits=limits):
                pass
        await listener.aclose()


async def test_dialing_a_closed_port_is_peer_unavailable() -> None:
    probe = socket.socket()
    probe.bind((LOCALHOST, 0))
    port = probe.getsockname()[1]
    probe.close()
    with trio.fail_after(TEST_DEADLINE_S), pytest.raises(PeerUnavailable, match="cannot connect"):
        async with open_secure_channel(Address(LOCALHOST, port), CLIENT_KEY):
            pass


async def test_extra_connections_are_refused_and_the_server_recovers() -> None:
    """200 sockets at once against 4 handshake slots: 196 get an immediate 503.

    The 4 admitted sockets then complete real handshakes, which frees their
    slots, and a fresh client is served.
    """
    outcomes = Outcomes()
    slots = 4
    limits = ChannelLimits(max_unauthenticated=slots, handshake_timeout_s=60)
    async with server(echo_handler(outcomes), limits) as address:
        streams = [await _connect_tcp(address) for _ in range(200)]
        refused: set[int] = set()
        async with trio.open_nursery() as nursery:
            done = trio.Event()

            async def await_refusal(index: int, stream: trio.SocketStream) -> None:
                answer = b""
                while chunk := await stream.receive_some():
                    answer += chunk
                assert answer.startswith(b"HTTP/1.1 503"), answer
                refused.add(index)
                if len(refused) == len(streams) - slots:
                    done.set()

            for index, stream in enumerate(streams):
                nursery.start_soon(await_refusal, index, stream)
            await done.wait()
            # The others are admitted and waiting for us; stop listening on them.
            nursery.cancel_scope.cancel()
        admitted = [s for i, s in enumerate(streams) if i not in refused]
        assert len(admitted) == slots
        for stream in admitted:
            peer = RawPeer(stream)
            session = await peer.handshake(NodeKey.generate())
            await peer.send(Message(data=session.encrypt_frame(b"late but fine")))
            assert session.decrypt_frame(await peer.receive_binary()) == b"late but fine"
        async with open_secure_channel(address, CLIENT_KEY) as channel:
            await channel.send_message(b"after the flood")
            assert await channel.receive_message() == b"after the flood"
        for stream in streams:
            await stream.aclose()


async def _connect_tcp(address: Address) -> trio.SocketStream:
    return await trio.open_tcp_stream(address.host, address.port)


async def test_a_real_dialer_sees_busy_as_peer_unavailable() -> None:
    limits = ChannelLimits(max_unauthenticated=1, handshake_timeout_s=60)
    async with server(echo_handler(Outcomes()), limits) as address:
        holder = RawPeer(await _connect_tcp(address))
        assert isinstance(await holder.upgrade(), AcceptConnection)  # admitted: slot taken
        with pytest.raises(PeerUnavailable):
            async with open_secure_channel(address, CLIENT_KEY):
                pass
        await holder.stream.aclose()


async def test_silent_peer_is_closed_after_the_idle_timeout() -> None:
    outcomes = Outcomes()
    limits = ChannelLimits(idle_timeout_s=0.3)
    async with server(echo_handler(outcomes), limits) as address:
        peer = await RawPeer.connect(address)
        await peer.handshake()
        assert (await outcomes.next())[0] == "connected"
        saw_ping = False
        while True:
            event = await peer.next_event()
            if isinstance(event, Ping):
                saw_ping = True  # and we never answer it
                continue
            break
        assert saw_ping
        assert isinstance(event, CloseConnection) and event.code == CLOSE_IDLE_TIMEOUT
        _, error = await outcomes.next()
        assert isinstance(error, PeerUnavailable) and "nothing heard" in str(error)


#: Idle timeout for the tests where pings must keep a channel up: long enough that a
#: loaded machine still answers a ping within it.
LIVE_IDLE_S = 1.0


async def test_a_quiet_but_live_peer_is_kept_by_pings() -> None:
    outcomes = Outcomes()
    limits = ChannelLimits(idle_timeout_s=LIVE_IDLE_S)
    async with (
        server(echo_handler(outcomes), limits) as address,
        open_secure_channel(address, CLIENT_KEY, limits=limits) as channel,
    ):
        # Being quiet is the scenario here, not a way to wait for something.
        await trio.sleep(4 * limits.idle_timeout_s)
        await channel.send_message(b"still here")
        assert await channel.receive_message() == b"still here"


async def test_a_busy_server_that_answers_pings_is_not_idle() -> None:
    limits = ChannelLimits(idle_timeout_s=LIVE_IDLE_S)
    release = trio.Event()

    async def stalled_handler(channel: SecureChannel) -> None:
        await release.wait()

    async with server(stalled_handler, limits) as address:
        async with open_secure_channel(address, CLIENT_KEY, limits=limits) as channel:
            # The server's handler says nothing, but its websocket answers pings:
            # the channel stays up for as long as we care to wait.
            await channel.send_message(b"anyone?")
            with trio.move_on_after(4 * limits.idle_timeout_s):
                await channel.receive_message()
                pytest.fail("the stalled server sent nothing")
        release.set()


async def test_dialer_closes_a_server_that_stalls_mid_frame() -> None:
    """A server that sends half a websocket frame and then nothing, not even a
    pong, is closed with 4004 after the idle timeout."""
    limits = ChannelLimits(idle_timeout_s=0.3)
    seen: list[Event | None] = []

    async def stalling_server(stream: trio.SocketStream) -> None:
        peer = RawPeer(stream, ConnectionType.SERVER)
        assert isinstance(await peer.next_event(), Request)
        await peer.send(AcceptConnection())
        await peer.secure(Handshake(initiator=False, node_key=SERVER_KEY))
        await stream.send_all(peer.ws.send(Message(data=bytes(1000)))[:20])
        seen.append(await peer.next_event())  # pings are read, never answered
        while not isinstance(seen[-1], CloseConnection | None):
            seen.append(await peer.next_event())

    with trio.fail_after(TEST_DEADLINE_S):
        async with trio.open_nursery() as nursery:
            listening = await trio.open_tcp_listeners(0, host=LOCALHOST)
            listeners = await nursery.start(trio.serve_listeners, stalling_server, listening)
            address = Address(LOCALHOST, listeners[0].socket.getsockname()[1])
            async with open_secure_channel(address, CLIENT_KEY, limits=limits) as channel:
                with pytest.raises(PeerUnavailable, match=r"nothing heard for 0\.3s"):
                    await channel.receive_message()
            nursery.cancel_scope.cancel()
    assert any(isinstance(event, Ping) for event in seen)
    assert isinstance(seen[-1], CloseConnection) and seen[-1].code == CLOSE_IDLE_TIMEOUT


async def test_handler_failure_closes_1011_and_the_server_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def failing_handler(channel: SecureChannel) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("handler bug")
        await channel.send_message(b"second time lucky")

    async with server(failing_handler) as address:
        peer = await RawPeer.connect(address)
        await peer.handshake()
        assert await peer.close_code() == CLOSE_INTERNAL_ERROR
        async with open_secure_channel(address, CLIENT_KEY) as channel:
            assert await channel.receive_message() == b"second time lucky"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert "handler bug" not in (errors[0].getMessage())  # traceback in the log, text local


async def test_connections_per_peer_are_bounded() -> None:
    outcomes = Outcomes()
    limits = ChannelLimits(max_connections_per_peer=1)
    async with (
        server(echo_handler(outcomes), limits) as address,
        open_secure_channel(address, CLIENT_KEY) as first,
    ):
        assert (await outcomes.next())[0] == "connected"
        second = await RawPeer.connect(address)
        await second.handshake()
        assert await second.close_code() == CLOSE_TOO_MANY_CONNECTIONS
        await first.send_message(b"first still works")
        assert await first.receive_message() == b"first still works"


async def test_plain_trio_websocket_client_cannot_skip_the_handshake() -> None:
    outcomes = Outcomes()
    limits = ChannelLimits(handshake_timeout_s=0.2)
    async with server(echo_handler(outcomes), limits) as address:
        url = f"ws://{address}{WEBSOCKET_PATH}"
        async with trio_websocket.open_websocket_url(url) as ws:
            await ws.send_message(b"x" * 32)  # a plausible message 1 ...
            await ws.get_message()  # ... answered by message 2
            await ws.send_message(b"let me in")
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await ws.get_message()
        assert closed.value.reason is not None
        assert closed.value.reason.code == CLOSE_HANDSHAKE_FAILED
