"""The secure channel over trio-websocket, and the dialing side (trio shell).

Owns ``SecureChannel``, the ``MessageChannel`` both ends of a connection use,
and ``open_secure_channel`` / ``connect_secure_channel`` to dial a peer.
bus/server.py owns the accepting side and reuses the channel, the handshake
driver and the websocket settings from here. All protocol decisions live in
the pure cores (bus/handshake.py, bus/noise.py); this module moves bytes,
keeps time, and translates trio and trio-websocket errors, once, into
``PeerUnavailable`` / ``RemoteProtocolError``. Nothing above bus/ imports
trio_websocket.

Websocket settings: binary messages at ``/hearthfile/1``; ``max_message_size``
fits the largest encrypted frame (``limits.max_message_bytes`` plus Noise
overhead; bigger closes with 1009); ``receive_buffer_size`` is
``limits.receive_buffer_bytes`` (trio-websocket's 4 KiB default costs several
times the throughput).

Idle detection: trio-websocket has no timeout of its own. While a task waits
in ``receive_message``, the peer must send a frame or answer a ping within
``idle_timeout_s``; pings go out after a third of that without hearing
anything. A peer that stalls, even in the middle of a frame, is closed with
4004. Time spent not receiving (the application is busy) never counts as
the peer's silence: that is our own back-pressure.

Sending: the channel encrypts a frame into one buffer with room in front, writes the
websocket header there (bus/wsframe.py: the same bytes wsproto would send) and sends
it with one write under trio-websocket's stream lock (``send_frame``); a client masks
it in place with numpy. trio-websocket still does the upgrade, receiving, pings and
the close handshake. Receiving a client's frames, wsproto unmasks them in pure Python
(0.4-0.9 ms per 256 KiB here): a process that receives bulk data as a server (the
node: pushes, chunks served by peers that dialed it) calls ``bus.wsmask.install()``
once at start-up to unmask in numpy instead.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Final, TypedDict

import trio
import trio_websocket
from trio_websocket import CloseReason, ConnectionClosed, WebSocketConnection
from wsproto.connection import ConnectionState

from hearthfile.address import Address
from hearthfile.bus import wsframe
from hearthfile.bus.channel import ChannelLimits
from hearthfile.bus.handshake import (
    Handshake,
    HandshakeError,
    SecureSession,
    encrypted_frame_bytes,
)
from hearthfile.errors import HearthError, PeerUnavailable, RemoteProtocolError
from hearthfile.identity import NodeId, NodeKey

logger = logging.getLogger(__name__)

WEBSOCKET_PATH: Final = "/hearthfile/1"

# Websocket close codes we send (docs/PROTOCOL.md, part A, "Closing").
CLOSE_NORMAL: Final = 1000
CLOSE_ABNORMAL: Final = 1006  # never sent: the stream ended without a close
CLOSE_TEXT_MESSAGE: Final = 1003
CLOSE_MESSAGE_TOO_BIG: Final = 1009  # sent by trio-websocket itself
CLOSE_INTERNAL_ERROR: Final = 1011
CLOSE_HANDSHAKE_FAILED: Final = 4001
CLOSE_HANDSHAKE_TIMEOUT: Final = 4002
CLOSE_BAD_FRAME: Final = 4003
CLOSE_IDLE_TIMEOUT: Final = 4004
CLOSE_TOO_MANY_CONNECTIONS: Final = 4005
CLOSE_PROTOCOL_VIOLATION: Final = 4006  # the bus protocol (frames, calls, credit)
#: Close codes that mean the transport was broken by a protocol violation.
PROTOCOL_VIOLATION_CODES: Final = frozenset({1002, 1003, 1007, 1009, 4001, 4003, 4006})
#: A websocket close reason is at most 123 UTF-8 bytes.
MAX_CLOSE_REASON_BYTES: Final = 123

#: The close handshake is a courtesy; a peer that does not answer is cut off.
CLOSE_TIMEOUT_S: Final = 2.0
#: Transport failures translated at this edge.
TRANSPORT_ERRORS: Final = (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError)


#: The limits used when a caller gives none.
DEFAULT_LIMITS: Final = ChannelLimits()


class WebsocketOptions(TypedDict):
    max_message_size: int
    receive_buffer_size: int
    message_queue_size: int


def websocket_options(limits: ChannelLimits) -> WebsocketOptions:
    """trio-websocket settings shared by both ends."""
    return {
        "max_message_size": encrypted_frame_bytes(limits.max_message_bytes),
        "receive_buffer_size": limits.receive_buffer_bytes,
        # One message queued while the application handles the previous one.
        "message_queue_size": 1,
    }


def close_timeout_s(limits: ChannelLimits) -> float:
    return min(CLOSE_TIMEOUT_S, limits.idle_timeout_s / 3)


def describe_close(exc: BaseException) -> str:
    """A short text for a transport failure, for PeerUnavailable reasons and logs."""
    if isinstance(exc, ConnectionClosed):
        if exc.reason is None:
            return "websocket closed"
        text = f"websocket closed with {exc.reason.code}"
        return f"{text} ({exc.reason.reason})" if exc.reason.reason else text
    if isinstance(exc, trio_websocket.ConnectionRejected):
        body = (exc.body or b"").decode("utf-8", "replace").strip()[:80]
        return f"refused with HTTP {exc.status_code}" + (f": {body}" if body else "")
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def close_websocket(
    ws: WebSocketConnection, code: int, reason: str | None, timeout_s: float
) -> None:
    """Close with a reason, waiting at most ``timeout_s`` for the peer, then drop TCP.

    When the caller is already cancelled (shutdown), the websocket reader is
    being cancelled too and could never see the peer's reply, so the TCP
    stream is dropped at once. trio-websocket leaves the stream open in some
    paths (after a 1009, or when the server closes first), so it is closed
    here unconditionally.
    """
    try:
        if trio.current_effective_deadline() != -math.inf:
            with trio.move_on_after(timeout_s):
                await ws.aclose(code, reason)
    finally:
        await trio.aclose_forcefully(ws._stream)


async def send_frame(ws: WebSocketConnection, frame: memoryview) -> None:
    """Write one complete websocket frame (bus/wsframe.py) on ``ws``'s stream, as
    ``ws.send_message`` would: under its stream lock, so it never interleaves with a
    ping, pong or close trio-websocket sends, and only while the websocket is open.
    A broken stream aborts the websocket and raises ``ConnectionClosed``, as there."""
    async with ws._stream_lock:
        # Checked under the lock: a close frame may have gone out while we waited.
        if ws._wsproto.state is not ConnectionState.OPEN:
            raise ConnectionClosed(ws.closed or CloseReason(CLOSE_ABNORMAL, None))
        try:
            await ws._stream.send_all(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await ws._abort_web_socket()
            raise ConnectionClosed(ws.closed) from None


class SecureChannel:
    """One authenticated, encrypted websocket to one peer; implements ``MessageChannel``.

    One task may receive and any number may send at a time. A send that is
    interrupted (cancelled mid-write) leaves the cipher out of step with the
    peer, so the channel refuses further sends and should be closed.
    """

    def __init__(
        self,
        ws: WebSocketConnection,
        session: SecureSession,
        peer: NodeId,
        limits: ChannelLimits,
        remote: str,
    ) -> None:
        self._ws = ws
        self._session = session
        self._peer = peer
        self._limits = limits
        #: The peer's network address, for logs.
        self.remote = remote
        self._send_lock = trio.StrictFIFOLock()
        self._receiving = False
        self._idle_scope: trio.CancelScope | None = None
        self._last_heard = trio.current_time()
        self._keepalive_scope = trio.CancelScope()
        self._closing = False
        self._closed = trio.Event()
        self._unusable: str | None = None

    @property
    def peer(self) -> NodeId:
        return self._peer

    def __repr__(self) -> str:
        return f"<SecureChannel {self._peer.short()} at {self.remote}>"

    async def send_message(self, data: bytes | bytearray | memoryview) -> None:
        async with self._send_lock:
            self._check_usable()
            wire = self._session.encrypt_frame(data, headroom=wsframe.HEADROOM)
            mask_key = os.urandom(wsframe.MASK_KEY_BYTES) if self._ws.is_client else None
            sent = False
            try:
                await send_frame(self._ws, wsframe.frame_in_place(wire, mask_key))
                sent = True
            except TRANSPORT_ERRORS as exc:
                raise self._gone(exc) from exc
            finally:
                if not sent and self._unusable is None:
                    # The frame's nonces are spent; anything sent after it would
                    # look like a gap to the peer.
                    self._unusable = "a send was interrupted"

    async def receive_message(self) -> bytes | bytearray:
        self._check_usable()
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this channel")
        self._receiving = True
        try:
            message = await self._next_message()
        finally:
            self._receiving = False
        if isinstance(message, str):
            await self.close(CLOSE_TEXT_MESSAGE, "binary messages only")
            raise RemoteProtocolError(f"peer {self._peer.short()} sent a text message")
        try:
            return self._session.decrypt_frame(message)
        except RemoteProtocolError:
            await self.close(CLOSE_BAD_FRAME, "bad secure frame")
            raise

    async def aclose(self, violation: str | None = None) -> None:
        if violation is None:
            await self.close(CLOSE_NORMAL, None)
        else:
            reason = violation.encode()[:MAX_CLOSE_REASON_BYTES].decode(errors="ignore")
            await self.close(CLOSE_PROTOCOL_VIOLATION, reason)

    async def close(self, code: int, reason: str | None) -> None:
        """Close with a websocket close code and reason; returns once closed. Idempotent."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        if self._unusable is None:
            self._unusable = "the channel is closed"
        self._keepalive_scope.cancel()
        try:
            await close_websocket(self._ws, code, reason, close_timeout_s(self._limits))
        finally:
            self._closed.set()

    async def wait_closed(self) -> None:
        """Until a close has finished (the websocket reader is no longer needed)."""
        await self._closed.wait()

    async def keep_alive(self) -> None:
        """Ping when nothing has been heard for a third of the idle timeout. Never raises."""
        interval = self._limits.idle_timeout_s / 3
        with self._keepalive_scope:
            while True:
                await trio.sleep_until(self._last_heard + interval)
                if trio.current_time() - self._last_heard < interval:
                    continue
                try:
                    await self._ws.ping()
                except (*TRANSPORT_ERRORS, ValueError):
                    return
                self._heard()

    async def _next_message(self) -> str | bytes:
        idle_s = self._limits.idle_timeout_s
        with trio.CancelScope(deadline=trio.current_time() + idle_s) as scope:
            self._idle_scope = scope
            try:
                message = await self._ws.get_message()
            except TRANSPORT_ERRORS as exc:
                raise self._gone(exc) from exc
            finally:
                self._idle_scope = None
            self._heard()
            return message
        await self.close(CLOSE_IDLE_TIMEOUT, "idle timeout")
        raise PeerUnavailable(self._peer.short(), f"nothing heard for {idle_s:g}s")

    def _heard(self) -> None:
        """The peer is alive: push the idle deadline of a waiting receive."""
        self._last_heard = trio.current_time()
        if self._idle_scope is not None:
            self._idle_scope.deadline = self._last_heard + self._limits.idle_timeout_s

    def _check_usable(self) -> None:
        if self._unusable is not None:
            raise PeerUnavailable(self._peer.short(), self._unusable)

    def _gone(self, exc: BaseException) -> HearthError:
        text = describe_close(exc)
        if self._unusable is None:
            self._unusable = text
        code = exc.reason.code if isinstance(exc, ConnectionClosed) and exc.reason else None
        if code in PROTOCOL_VIOLATION_CODES:
            return RemoteProtocolError(f"peer {self._peer.short()}: {text}")
        return PeerUnavailable(self._peer.short(), text)


async def secure_websocket(
    ws: WebSocketConnection,
    handshake: Handshake,
    limits: ChannelLimits,
    remote: str,
    nursery: trio.Nursery,
) -> SecureChannel:
    """Run the handshake on an open websocket; the channel's pinger goes in ``nursery``.

    A handshake the peer fails is closed with 4001 and its reason, and raised
    as ``HandshakeError``; a transport failure is ``PeerUnavailable``.
    """
    try:
        while not handshake.complete:
            if handshake.wants_write:
                await ws.send_message(handshake.write_message())
                continue
            message = await ws.get_message()
            if isinstance(message, str):
                raise HandshakeError("text message during the handshake")
            handshake.read_message(message)
    except HandshakeError as exc:
        await close_websocket(ws, CLOSE_HANDSHAKE_FAILED, exc.reason, close_timeout_s(limits))
        raise
    except TRANSPORT_ERRORS as exc:
        raise PeerUnavailable(remote, f"during the handshake: {describe_close(exc)}") from exc
    session = handshake.session(limits.max_message_bytes)
    channel = SecureChannel(ws, session, handshake.peer, limits, remote)
    nursery.start_soon(channel.keep_alive)
    return channel


def translate_error(error: Exception, remote: str) -> Exception:
    """Transport and trio-websocket errors -> PeerUnavailable; anything else unchanged."""
    if isinstance(error, HearthError):
        return error
    if isinstance(error, (*TRANSPORT_ERRORS, trio_websocket.HandshakeError, OSError)):
        translated = PeerUnavailable(remote, describe_close(error))
        translated.__cause__ = error
        return translated
    return error


def unwrap_group(group: BaseExceptionGroup[BaseException], remote: str) -> Exception | None:
    """A nursery's lone ordinary error, translated; None if the group holds anything else
    (cancellation, KeyboardInterrupt, several errors), which must go up untouched.

    Raise the result ``from result.__cause__``: that keeps its own cause and hides
    the group it was unwrapped from.
    """
    error = sole_error(group)
    return None if error is None else translate_error(error, remote)


def sole_error(group: BaseExceptionGroup[BaseException]) -> Exception | None:
    """The one ordinary exception a nursery's group holds, if that is all it holds."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        item = pending.pop()
        if isinstance(item, BaseExceptionGroup):
            pending.extend(item.exceptions)
        else:
            leaves.append(item)
    if len(leaves) == 1 and isinstance(leaves[0], Exception):
        return leaves[0]
    return None


async def _open_websocket(
    nursery: trio.Nursery, address: Address, via: Path | None, limits: ChannelLimits
) -> WebSocketConnection:
    """The websocket to ``address`` over TCP, or over the Unix socket ``via``."""
    if via is None:
        return await trio_websocket.connect_websocket(
            nursery,
            address.host,
            address.port,
            WEBSOCKET_PATH,
            use_ssl=False,
            **websocket_options(limits),
        )
    stream = await trio.open_unix_socket(via)
    return await trio_websocket.wrap_client_stream(
        nursery, stream, "localhost", WEBSOCKET_PATH, **websocket_options(limits)
    )


async def _dial(
    nursery: trio.Nursery,
    address: Address,
    node_key: NodeKey,
    expected_peer: NodeId | None,
    limits: ChannelLimits,
    via: Path | None = None,
) -> SecureChannel:
    """TCP (or Unix socket), websocket upgrade and handshake, all within
    ``handshake_timeout_s``."""
    remote = str(address) if via is None else str(via)
    ws: WebSocketConnection | None = None
    with trio.move_on_after(limits.handshake_timeout_s):
        try:
            ws = await _open_websocket(nursery, address, via, limits)
        except (OSError, trio_websocket.HandshakeError, *TRANSPORT_ERRORS) as exc:
            raise PeerUnavailable(remote, f"cannot connect: {describe_close(exc)}") from exc
        handshake = Handshake(initiator=True, node_key=node_key, expected_peer=expected_peer)
        return await secure_websocket(ws, handshake, limits, remote, nursery)
    if ws is not None:
        await close_websocket(
            ws, CLOSE_HANDSHAKE_TIMEOUT, "handshake timeout", close_timeout_s(limits)
        )
    raise PeerUnavailable(remote, f"no handshake within {limits.handshake_timeout_s:g}s")


async def _run_client_channel(
    address: Address,
    node_key: NodeKey,
    expected_peer: NodeId | None,
    limits: ChannelLimits,
    via: Path | None = None,
    *,
    task_status: trio.TaskStatus[SecureChannel] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The life of one dialed channel: its websocket reader and pinger run in here.

    Before ``started`` every failure goes to the caller of ``nursery.start``;
    after it, failures are logged and end this task, so a dying connection
    never takes the caller's nursery down with it.
    """
    remote = str(address)
    channel: SecureChannel | None = None
    try:
        async with trio.open_nursery() as nursery:
            channel = await _dial(nursery, address, node_key, expected_peer, limits, via)
            task_status.started(channel)
            try:
                await channel.wait_closed()
            finally:
                await channel.aclose()
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        error = unwrap_group(group, remote)
        if error is None:
            raise
        if channel is None:
            raise error from error.__cause__
        logger.warning("connection to %s (%s) failed: %s", channel.peer.short(), remote, error)


async def connect_secure_channel(
    nursery: trio.Nursery,
    address: Address,
    node_key: NodeKey,
    *,
    expected_peer: NodeId | None = None,
    limits: ChannelLimits = DEFAULT_LIMITS,
    via: Path | None = None,
) -> SecureChannel:
    """Dial ``address`` and complete the handshake; the channel lives in ``nursery``.

    Its background work (websocket reader, pinger) runs as one task in
    ``nursery`` until ``aclose()``. Raises ``PeerUnavailable`` when the peer
    cannot be reached, refuses, or does not finish the handshake within
    ``limits.handshake_timeout_s``; ``HandshakeError`` when it fails the
    handshake (including a NodeId other than ``expected_peer``). With ``via``, the
    connection goes over that Unix socket (a daemon's control socket) instead of TCP.
    """
    run = partial(_run_client_channel, address, node_key, expected_peer, limits, via)
    channel: SecureChannel = await nursery.start(run)
    return channel


@asynccontextmanager
async def open_secure_channel(
    address: Address,
    node_key: NodeKey,
    *,
    expected_peer: NodeId | None = None,
    limits: ChannelLimits = DEFAULT_LIMITS,
    via: Path | None = None,
) -> AsyncIterator[SecureChannel]:
    """``async with open_secure_channel(addr, key) as channel:`` -- closed on exit.

    Same errors as ``connect_secure_channel``. An exception from the body
    comes out as itself, not wrapped in an ExceptionGroup.
    """
    try:
        async with trio.open_nursery() as nursery:
            channel = await connect_secure_channel(
                nursery, address, node_key, expected_peer=expected_peer, limits=limits, via=via
            )
            try:
                yield channel
            finally:
                await channel.aclose()
    except BaseExceptionGroup as group:
        # The background task never raises and connect errors are translated
        # already, so a lone error is the body's own: hand it back as it is.
        error = sole_error(group)
        if error is None:
            raise
        raise error from error.__cause__
