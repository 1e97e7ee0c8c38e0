"""Connections by NodeID: dial on demand, adopt accepted ones, keep bootstrap peers (trio).

``PeerPool`` is where the rest of the node gets a ``Connection`` to a peer. It owns every
connection's lifetime: dialed connections run in the pool's nursery (``serve``), accepted
ones in the server's task that hands them over (``serve_inbound``). It decides nothing
about the protocol; it only counts connections per peer (``max_connections_per_peer``
covers both directions), shares one dial among concurrent ``get`` calls for the same
peer, redials persistent (bootstrap) peers with exponential backoff, and reports a peer
going up (first connection) and down (last one closed) to an ``on_event`` callback.

The dialer is a parameter, ``open_secure_channel`` by default, so tests can run the pool
over in-memory channels.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

import trio

from hearthfile.bus.capability import Registry, TrustLevel
from hearthfile.bus.channel import ChannelLimits, MessageChannel
from hearthfile.bus.client import open_secure_channel
from hearthfile.bus.connection import Connection
from hearthfile.config import Address
from hearthfile.errors import HearthError, PeerUnavailable
from hearthfile.events import PeerConnected, PeerDisconnected, PeerEvent
from hearthfile.identity import NodeId, NodeKey

log = logging.getLogger(__name__)

#: First redial delay of a persistent peer; doubles per failure up to the maximum.
BACKOFF_INITIAL_S: Final = 1.0
#: Longest wait between redials, and how long a connection must have lived for the
#: next failure to start again from the initial delay.
BACKOFF_MAX_S: Final = 60.0

Direction = Literal["inbound", "outbound"]


class Dialer(Protocol):
    """The shape of ``open_secure_channel``."""

    def __call__(
        self,
        address: Address,
        node_key: NodeKey,
        *,
        expected_peer: NodeId | None = None,
        limits: ChannelLimits = ...,
    ) -> AbstractAsyncContextManager[MessageChannel]: ...


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """One row of ``PeerPool.connections()``; bytes are plaintext frame bytes."""

    peer: NodeId
    remote: str
    direction: Direction
    connected_since: float  # Unix time
    bytes_in: int
    bytes_out: int
    handlers_running: int
    calls_open: int


@dataclass(slots=True)
class _Entry:
    conn: Connection
    remote: str
    direction: Direction
    since: float


@dataclass(slots=True)
class _PendingDial:
    """A dial in progress that later ``get`` calls for the same peer wait on."""

    done: trio.Event = field(default_factory=trio.Event)
    error: PeerUnavailable | None = None


class PeerPool:
    """Connections to peers, at most ``limits.max_connections_per_peer`` each."""

    def __init__(
        self,
        node_key: NodeKey,
        registry: Registry,
        trust_of: Callable[[NodeId], TrustLevel],
        *,
        limits: ChannelLimits | None = None,
        dial: Dialer = open_secure_channel,
        on_event: Callable[[PeerEvent], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._node_key = node_key
        self._registry = registry
        self._trust_of = trust_of
        self._limits = limits or ChannelLimits()
        self._dial = dial
        self._on_event = on_event
        self._rng = rng or random.Random()
        self._entries: dict[NodeId, list[_Entry]] = {}
        self._addresses: dict[NodeId, Address] = {}
        self._dialing: dict[NodeId, _PendingDial] = {}
        self._persistent: list[tuple[Address, NodeId | None]] = []
        self._nursery: trio.Nursery | None = None

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run dialed connections and persistent peers until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for address, node_id in self._persistent:
                nursery.start_soon(self._keep, address, node_id)
            task_status.started()
            await trio.sleep_forever()

    # --- queries ---

    def connection(self, node_id: NodeId) -> Connection | None:
        """A live connection to ``node_id``, the oldest one, or None."""
        for entry in self._entries.get(node_id, ()):
            if not entry.conn.is_closed:
                return entry.conn
        return None

    def enforce_trust(self, node_id: NodeId) -> int:
        """``node_id``'s trust was lowered: stop its running calls that the new level no
        longer admits, on every connection (``Connection.enforce_trust``)."""
        return sum(e.conn.enforce_trust() for e in self._entries.get(node_id, ()))

    def connections(self) -> list[ConnectionInfo]:
        """A snapshot of every connection, oldest first."""
        rows = []
        for entries in self._entries.values():
            for e in entries:
                stats = e.conn.stats()
                rows.append(
                    ConnectionInfo(
                        e.conn.peer,
                        e.remote,
                        e.direction,
                        e.since,
                        stats.bytes_in,
                        stats.bytes_out,
                        stats.handlers_running,
                        stats.calls_open,
                    )
                )
        return sorted(rows, key=lambda row: row.connected_since)

    # --- getting a connection ---

    async def get(self, node_id: NodeId, address: Address | None = None) -> Connection:
        """A connection to ``node_id``, dialing ``address`` (or the last one known) if
        there is none. Raises ``PeerUnavailable`` when that fails."""
        while True:
            conn = self.connection(node_id)
            if conn is not None:
                return conn
            pending = self._dialing.get(node_id)
            if pending is None:
                return await self._dial_once(node_id, address or self._addresses.get(node_id))
            await pending.done.wait()
            if pending.error is not None:
                raise pending.error

    async def _dial_once(self, node_id: NodeId, address: Address | None) -> Connection:
        if address is None:
            raise PeerUnavailable(node_id.short(), "no known address")
        if self._nursery is None:
            raise RuntimeError("PeerPool.get before serve() started")
        pending = self._dialing[node_id] = _PendingDial()
        try:
            conn: Connection = await self._nursery.start(self._run_outbound, address, node_id)
            return conn
        except PeerUnavailable as exc:
            pending.error = exc
            raise
        finally:
            del self._dialing[node_id]
            pending.done.set()

    async def _run_outbound(
        self,
        address: Address,
        node_id: NodeId | None,
        *,
        task_status: trio.TaskStatus[Connection] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            async with self._dial(
                address, self._node_key, expected_peer=node_id, limits=self._limits
            ) as channel:
                self._addresses[channel.peer] = address
                await self._run(channel, str(address), "outbound", task_status)
        except PeerUnavailable:
            raise
        except HearthError as exc:
            # A failed handshake and the like: to callers, the peer is not available.
            raise PeerUnavailable(str(address), str(exc)) from exc

    async def serve_inbound(self, channel: MessageChannel) -> None:
        """Serve an accepted channel until it closes (``serve_secure``'s handler)."""
        remote = str(getattr(channel, "remote", "?"))
        await self._run(channel, remote, "inbound", trio.TASK_STATUS_IGNORED)

    async def _run(
        self,
        channel: MessageChannel,
        remote: str,
        direction: Direction,
        task_status: trio.TaskStatus[Connection],
    ) -> None:
        peer = channel.peer
        if len(self._entries.get(peer, ())) >= self._limits.max_connections_per_peer:
            raise PeerUnavailable(peer.short(), "too many connections to this node")
        conn = Connection(
            channel, self._registry, self._trust_of, initiator=direction == "outbound"
        )
        entry = _Entry(conn, remote, direction, time.time())
        self._register(entry)
        try:
            await conn.serve(task_status=task_status)
        except Exception:
            # One broad catch per connection: a bug shown by one peer must not stop the node.
            log.exception("connection to %s failed", peer.short())
        finally:
            self._unregister(entry)

    def _register(self, entry: _Entry) -> None:
        entries = self._entries.setdefault(entry.conn.peer, [])
        entries.append(entry)
        if len(entries) == 1:
            log.log(
                self._level(entry.conn.peer),
                "peer %s up (%s, %s)",
                entry.conn.peer.short(),
                entry.direction,
                entry.remote,
            )
            self._emit(PeerConnected(entry.conn.peer, entry.remote, entry.direction))

    def _unregister(self, entry: _Entry) -> None:
        peer = entry.conn.peer
        entries = self._entries[peer]
        entries.remove(entry)
        if not entries:
            del self._entries[peer]
            reason = entry.conn.close_reason or "closed"
            log.log(self._level(peer), "peer %s down: %s", peer.short(), reason)
            self._emit(PeerDisconnected(peer, reason))

    def _level(self, peer: NodeId) -> int:
        """The node's own CLI connections are not news: logged at debug level."""
        return logging.DEBUG if peer == self._node_key.node_id else logging.INFO

    def _emit(self, event: PeerEvent) -> None:
        if self._on_event is not None:
            self._on_event(event)

    # --- persistent peers ---

    def keep_connected(self, address: Address, node_id: NodeId | None = None) -> None:
        """Stay connected to ``address`` (a bootstrap peer), redialing with backoff.
        ``node_id`` may be unknown: the first handshake tells it."""
        self._persistent.append((address, node_id))
        if self._nursery is not None:
            self._nursery.start_soon(self._keep, address, node_id)

    async def _keep(self, address: Address, node_id: NodeId | None) -> None:
        delay = BACKOFF_INITIAL_S
        while True:
            started = trio.current_time()
            node_id = await self._keep_once(address, node_id)
            if trio.current_time() - started >= BACKOFF_MAX_S:
                delay = BACKOFF_INITIAL_S  # it held for a while: start over
            # Jitter spreads the redials of many nodes after a shared outage.
            await trio.sleep(delay * (0.5 + self._rng.random() / 2))
            delay = min(delay * 2, BACKOFF_MAX_S)

    async def _keep_once(self, address: Address, node_id: NodeId | None) -> NodeId | None:
        """Connect (or find the peer already connected) and wait until that connection
        ends; the peer's NodeID once known."""
        existing = None if node_id is None else self.connection(node_id)
        try:
            if existing is not None:
                conn = existing  # the peer dialed us: redial when that ends
            elif node_id is not None:
                conn = await self.get(node_id, address)
            else:
                conn = await self._nursery_start_outbound(address)
        except PeerUnavailable as exc:
            log.info("bootstrap peer %s unavailable: %s", address, exc.reason or exc)
            return node_id
        await conn.wait_closed()
        return conn.peer

    async def _nursery_start_outbound(self, address: Address) -> Connection:
        assert self._nursery is not None  # persistent peers run inside serve()
        conn: Connection = await self._nursery.start(self._run_outbound, address, None)
        return conn
