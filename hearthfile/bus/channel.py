"""The seam between the secure transport and the call multiplexer (pure).

A ``MessageChannel`` moves whole bus frames (plaintext bytes, one frame per
message) to and from one authenticated peer. ``bus.server``/``bus.client``
provide it over Noise-encrypted websockets; ``bus.connection`` multiplexes
calls over any implementation of it, which lets the multiplexer be tested
over in-memory channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from hearthfile.identity import NodeId

#: A 256 KiB chunk plus generous room for the frame header.
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 + 64 * 1024


@dataclass(frozen=True, slots=True)
class ChannelLimits:
    """Bounds on one transport connection; each stops a specific abuse."""

    #: Largest plaintext frame accepted; bigger closes the connection.
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    #: A peer that has not completed the handshake by then is dropped (slowloris).
    handshake_timeout_s: float = 10.0
    #: A peer silent for this long (no frame, no pong) is dropped; pings go at a third of it.
    idle_timeout_s: float = 60.0
    #: Connections still in the handshake, server-wide; more are refused at once.
    max_unauthenticated: int = 64
    #: Authenticated connections from one NodeID kept at once.
    max_connections_per_peer: int = 4
    #: trio-websocket receive buffer; its 4 KiB default costs several times the throughput.
    receive_buffer_bytes: int = 1024 * 1024


class MessageChannel(Protocol):
    """One authenticated, ordered, reliable channel of whole messages to one peer."""

    @property
    def peer(self) -> NodeId:
        """The peer's NodeID, proven by the handshake."""
        ...

    async def send_message(self, data: bytes | bytearray | memoryview) -> None:
        """Send one frame. Raises ``PeerUnavailable`` once the channel is gone."""
        ...

    async def receive_message(self) -> bytes:
        """Next frame. Raises ``PeerUnavailable`` when the channel closes and
        ``RemoteProtocolError`` when the peer broke the transport."""
        ...

    async def aclose(self, violation: str | None = None) -> None:
        """Close the channel; idempotent. ``violation`` says the peer broke the bus
        protocol (closed with 4006 and that reason instead of a normal close)."""
        ...
