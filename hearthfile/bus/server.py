"""Accepting peers: ``serve_secure`` (trio shell).

Owns the listening socket and the life of every accepted connection: admit
it or refuse it, upgrade it to a websocket at ``/hearthfile/1``, run the
handshake (bus/handshake.py) through the driver in bus/client.py, then hand
the ``SecureChannel`` to the caller's handler for as long as the handler runs.

Bounds, each stopping one abuse (values from ``ChannelLimits``):

- ``max_unauthenticated`` connections may be between TCP accept and the end
  of the handshake, server-wide. When they are all taken, a newcomer takes the
  slot of the oldest one if that has been at it for ``stale_handshake_s``
  (a tenth of the handshake timeout; an honest handshake takes a few round
  trips), else it is refused at once with a plain ``HTTP/1.1 503`` and closed,
  before reading a byte: a flood of silent sockets cannot grow our memory or
  tasks past this bound, and, unless it opens more than ``max_unauthenticated``
  sockets every ``stale_handshake_s``, cannot keep a peer from connecting.
- The optional control socket (a Unix socket in the node's home, mode 0600)
  has its own slots: the node's own CLI gets in whatever remote peers do.
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
import os
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
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
    control_path: Path | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``address`` and run ``handler(channel)`` for every authenticated peer.

    With ``control_path``, also listen on that Unix socket (made afresh, mode 0600,
    removed on exit), with its own handshake slots.

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
    if control_path is None:
        task_status.started(port)
        await trio.serve_listeners(server.handle_stream, listeners)
        return
    control = await _unix_listener(control_path)
    try:
        async with trio.open_nursery() as nursery:
            local = _SecureServer(node_key, handler, limits)
            nursery.start_soon(trio.serve_listeners, local.handle_stream, [control])
            task_status.started(port)
            await trio.serve_listeners(server.handle_stream, listeners)
    finally:
        control_path.unlink(missing_ok=True)


async def _unix_listener(path: Path) -> trio.SocketListener:
    """A listening Unix socket at ``path``, only for this user (a stale one is replaced:
    the home lock says no other daemon uses it)."""
    path.unlink(missing_ok=True)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        await sock.bind(os.fspath(path))
    finally:
        os.umask(old_umask)
    sock.listen(socket.SOMAXCONN)
    return trio.SocketListener(sock)


@dataclass(slots=True)
class _Connection:
    """What we know of one accepted connection, for its log line."""

    remote: str
    peer: NodeId | None = None
    #: Counted in ``max_unauthenticated`` until the handshake ends either way.
    holds_slot: bool = False
    #: When it was accepted (trio's clock); cancelled to give its slot to a newcomer.
    accepted_at: float = 0.0
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)

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
        self._pending: dict[int, _Connection] = {}  # holding slots, oldest first
        self._per_peer: Counter[NodeId] = Counter()
        self._refusing = False
        self._evicted = 0
        #: A handshake this old gives its slot to a newcomer when all are taken.
        self.stale_handshake_s = limits.handshake_timeout_s / 10

    async def handle_stream(self, stream: trio.SocketStream) -> None:
        """One accepted connection, start to end. Never raises but Cancelled."""
        connection = _Connection(_remote_label(stream), accepted_at=trio.current_time())
        if len(self._pending) >= self._limits.max_unauthenticated and not self._evict_stale():
            await self._refuse(stream, connection)
            return
        self._pending[id(connection)] = connection
        connection.holds_slot = True
        self._refusing = False
        try:
            with connection.scope:
                await self._serve(_EndObservingStream(stream), connection)
        except Exception as exc:
            _log_failure(connection, exc)
        finally:
            self._release_slot(connection)
            await trio.aclose_forcefully(stream)

    def _evict_stale(self) -> bool:
        """Drop the oldest handshake if it is stale; whether a slot was freed."""
        oldest = next(iter(self._pending.values()))
        if trio.current_time() - oldest.accepted_at < self.stale_handshake_s:
            return False
        self._release_slot(oldest)
        oldest.scope.cancel()
        self._evicted += 1
        if self._evicted in (1, 10, 100) or self._evicted % 1000 == 0:
            logger.warning(
                "dropped %d stale handshakes to admit newer connections (max_unauthenticated)",
                self._evicted,
            )
        return True

    def _release_slot(self, connection: _Connection) -> None:
        if connection.holds_slot:
            connection.holds_slot = False
            del self._pending[id(connection)]

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
        logger.debug("peer %s connected from %s", peer.short(), channel.remote)
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
            logger.debug("peer %s disconnected", peer.short())

    async def _refuse(self, stream: trio.SocketStream, connection: _Connection) -> None:
        if not self._refusing:
            # One warning per burst: a flood must not become a flood of log lines.
            logger.warning(
                "refusing connections: %d handshakes already in progress (max_unauthenticated)",
                len(self._pending),
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
    if stream.socket.family == socket.AF_UNIX:
        return "control socket"
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
