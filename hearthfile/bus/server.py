"""Accepting peers: ``serve_secure`` (trio shell).

Owns the listening socket and the life of every accepted connection: admit
it or refuse it, upgrade it to a websocket at ``/hearthfile/1``, run the
handshake (bus/handshake.py) through the driver in bus/client.py, then hand
the ``SecureChannel`` to the caller's handler for as long as the handler runs.

Bounds, each stopping one abuse (values from ``ChannelLimits``):

- ``max_unauthenticated`` connections may be between TCP accept and the end
  of the handshake, server-wide. More are refused at once with a plain
  ``HTTP/1.1 503`` and closed, before reading a byte: a flood of silent
  sockets cannot grow our memory or tasks past this bound.
- ``handshake_timeout_s`` from accept to a proven peer (slowloris).
- ``max_connections_per_peer`` authenticated connections per NodeId; one more
  is closed with 4005.
- ``max_message_bytes`` per frame and ``idle_timeout_s`` (see bus/client.py).

Each connection has one broad ``except Exception`` at its boundary: whatever
one peer does, it is logged once and only that connection closes.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import trio
import trio_websocket
from trio_websocket import WebSocketConnection, WebSocketRequest

from hearthfile.bus.channel import ChannelLimits
from hearthfile.bus.client import (
    CLOSE_HANDSHAKE_TIMEOUT,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    CLOSE_TOO_MANY_CONNECTIONS,
    DEFAULT_LIMITS,
    WEBSOCKET_PATH,
    SecureChannel,
    close_timeout_s,
    close_websocket,
    secure_websocket,
    unwrap_group,
    websocket_options,
)
from hearthfile.bus.handshake import Handshake
from hearthfile.config import Address
from hearthfile.errors import PeerUnavailable, RemoteProtocolError
from hearthfile.identity import NodeId, NodeKey

logger = logging.getLogger(__name__)

ChannelHandler = Callable[[SecureChannel], Awaitable[None]]

#: Sent to connections beyond ``max_unauthenticated``, without reading their request.
BUSY_RESPONSE: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: 5\r\n"
    b"Connection: close\r\n"
    b"\r\n"
    b"busy\n"
)
_NOT_FOUND_BODY: Final = f"hearthfile speaks websocket at {WEBSOCKET_PATH}\n".encode()
#: Writing 120 bytes to a fresh socket never waits; this only bounds a pathological peer.
_REFUSAL_TIMEOUT_S: Final = 1.0


async def serve_secure(
    address: Address,
    node_key: NodeKey,
    handler: ChannelHandler,
    *,
    limits: ChannelLimits = DEFAULT_LIMITS,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``address`` and run ``handler(channel)`` for every authenticated peer.

    ``task_status.started(port)`` reports the bound port (``address.port`` may
    be 0). With a host name that resolves to several addresses, the port
    reported is the first listener's; pass a numeric host with port 0.
    The channel is closed when the handler returns (1000) or raises (1011).
    Runs until cancelled.
    """
    listeners = await trio.open_tcp_listeners(address.port, host=address.host or None)
    port: int = listeners[0].socket.getsockname()[1]
    server = _SecureServer(node_key, handler, limits)
    logger.info("listening on %s port %d as %s", address.host, port, node_key.node_id.short())
    task_status.started(port)
    await trio.serve_listeners(server.handle_stream, listeners)


@dataclass(slots=True)
class _Connection:
    """What we know of one accepted connection, for its log line."""

    remote: str
    peer: NodeId | None = None
    #: Counted in ``max_unauthenticated`` until the handshake ends either way.
    holds_slot: bool = False

    def __str__(self) -> str:
        return self.remote if self.peer is None else f"{self.peer.short()} ({self.remote})"


class _EndObservingStream(trio.abc.Stream):
    """A stream that notices its own end, so a dead socket frees its handshake slot at once.

    trio-websocket waits for an HTTP request forever once the socket closed
    or sent garbage; watching the stream end lets us stop waiting.
    """

    def __init__(self, inner: trio.SocketStream) -> None:
        self._inner = inner
        self.ended = trio.Event()
        self.received_any = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            data = await self._inner.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.ended.set()
            raise
        if data:
            self.received_any = True
        else:
            self.ended.set()
        return data

    async def aclose(self) -> None:
        self.ended.set()
        await self._inner.aclose()


class _SecureServer:
    """Admission counts and the per-connection procedure of one ``serve_secure``."""

    def __init__(self, node_key: NodeKey, handler: ChannelHandler, limits: ChannelLimits) -> None:
        self._node_key = node_key
        self._handler = handler
        self._limits = limits
        self._unauthenticated = 0
        self._per_peer: Counter[NodeId] = Counter()
        self._refusing = False

    async def handle_stream(self, stream: trio.SocketStream) -> None:
        """One accepted TCP connection, start to end. Never raises but Cancelled."""
        connection = _Connection(_remote_label(stream))
        if self._unauthenticated >= self._limits.max_unauthenticated:
            await self._refuse(stream, connection)
            return
        self._unauthenticated += 1
        connection.holds_slot = True
        self._refusing = False
        try:
            await self._serve(_EndObservingStream(stream), connection)
        except Exception as exc:
            _log_failure(connection, exc)
        finally:
            self._release_slot(connection)
            await trio.aclose_forcefully(stream)

    def _release_slot(self, connection: _Connection) -> None:
        if connection.holds_slot:
            connection.holds_slot = False
            self._unauthenticated -= 1

    async def _serve(self, stream: _EndObservingStream, connection: _Connection) -> None:
        try:
            async with trio.open_nursery() as nursery:
                channel = await self._accept(nursery, stream, connection.remote)
                self._release_slot(connection)
                connection.peer = channel.peer
                await self._run_handler(channel)
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            error = unwrap_group(group, str(connection))
            if error is None:
                raise
            raise error from error.__cause__

    async def _accept(
        self, nursery: trio.Nursery, stream: _EndObservingStream, remote: str
    ) -> SecureChannel:
        """Websocket upgrade and handshake within ``handshake_timeout_s``."""
        ws: WebSocketConnection | None = None
        with trio.move_on_after(self._limits.handshake_timeout_s):
            request = await _upgrade_request(nursery, stream, self._limits, remote)
            if request.path != WEBSOCKET_PATH:
                await request.reject(404, body=_NOT_FOUND_BODY)
                raise RemoteProtocolError(f"websocket request for unknown path {request.path!r}")
            ws = await request.accept()
            handshake = Handshake(initiator=False, node_key=self._node_key)
            return await secure_websocket(ws, handshake, self._limits, remote, nursery)
        if ws is not None:
            await close_websocket(
                ws, CLOSE_HANDSHAKE_TIMEOUT, "handshake timeout", close_timeout_s(self._limits)
            )
        raise PeerUnavailable(remote, f"no handshake within {self._limits.handshake_timeout_s:g}s")

    async def _run_handler(self, channel: SecureChannel) -> None:
        peer = channel.peer
        if self._per_peer[peer] >= self._limits.max_connections_per_peer:
            await channel.close(CLOSE_TOO_MANY_CONNECTIONS, "too many connections from this node")
            raise RemoteProtocolError(
                f"over {self._limits.max_connections_per_peer} connections from this node"
            )
        self._per_peer[peer] += 1
        logger.info("peer %s connected from %s", peer.short(), channel.remote)
        code: int = CLOSE_INTERNAL_ERROR
        reason: str | None = "internal error"
        try:
            await self._handler(channel)
            code, reason = CLOSE_NORMAL, None
        finally:
            self._per_peer[peer] -= 1
            if not self._per_peer[peer]:
                del self._per_peer[peer]
            await channel.close(code, reason)
            logger.info("peer %s disconnected", peer.short())

    async def _refuse(self, stream: trio.SocketStream, connection: _Connection) -> None:
        if not self._refusing:
            # One warning per burst: a flood must not become a flood of log lines.
            logger.warning(
                "refusing connections: %d handshakes already in progress (max_unauthenticated)",
                self._unauthenticated,
            )
            self._refusing = True
        logger.debug("refused %s: busy", connection)
        # A peer that left already needs no answer.
        with (
            trio.move_on_after(_REFUSAL_TIMEOUT_S),
            contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
        ):
            await stream.send_all(BUSY_RESPONSE)
        await trio.aclose_forcefully(stream)


async def _upgrade_request(
    nursery: trio.Nursery, stream: _EndObservingStream, limits: ChannelLimits, remote: str
) -> WebSocketRequest:
    """The client's websocket request, or PeerUnavailable as soon as the stream ends."""
    requests: list[WebSocketRequest] = []

    async def read_request(race: trio.CancelScope) -> None:
        requests.append(
            await trio_websocket.wrap_server_stream(nursery, stream, **websocket_options(limits))
        )
        race.cancel()

    async def watch_end(race: trio.CancelScope) -> None:
        await stream.ended.wait()
        race.cancel()

    async with trio.open_nursery() as race:
        race.start_soon(read_request, race.cancel_scope)
        race.start_soon(watch_end, race.cancel_scope)
    if requests:
        return requests[0]
    if stream.received_any:
        raise RemoteProtocolError("sent something other than a websocket upgrade")
    raise PeerUnavailable(remote, "closed before the websocket upgrade")


def _remote_label(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
    except OSError:
        return "unknown peer"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _log_failure(connection: _Connection, exc: Exception) -> None:
    """One line per failed connection, at the level its cause deserves."""
    if isinstance(exc, PeerUnavailable):
        logger.info("connection %s ended: %s", connection, exc)
    elif isinstance(exc, RemoteProtocolError):
        logger.warning("peer %s broke the protocol: %s", connection, exc)
    else:
        # Our own bug (or the handler's): keep the traceback, here only.
        logger.error("connection %s failed", connection, exc_info=exc)
