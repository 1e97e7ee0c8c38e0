"""The seam between the secure transport and the call multiplexer (pure).

A ``MessageChannel`` moves whole bus frames (plaintext bytes, one frame per
message) to and from one authenticated peer. ``bus.server``/``bus.client``
provide it over Noise-encrypted websockets; ``bus.connection`` multiplexes
calls over any implementation of it, which lets the multiplexer be tested
over in-memory channels.
"""

from __future__ import annotations

from typing import Protocol

from hearthfile.identity import NodeId
from hearthfile.limits import DEFAULT_MAX_MESSAGE_BYTES, ChannelLimits

# The bounds of a connection are shared with config.py, so they live in limits.py.
__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "ChannelLimits", "MessageChannel"]


class MessageChannel(Protocol):
    """One authenticated, ordered, reliable channel of whole messages to one peer."""

    @property
    def peer(self) -> NodeId:
        """The peer's NodeID, proven by the handshake."""
        ...

    async def send_message(self, data: bytes | bytearray | memoryview) -> None:
        """Send one frame. Raises ``PeerUnavailable`` once the channel is gone."""
        ...

    async def receive_message(self) -> bytes | bytearray:
        """Next frame. Raises ``PeerUnavailable`` when the channel closes and
        ``RemoteProtocolError`` when the peer broke the transport."""
        ...

    async def aclose(self, violation: str | None = None) -> None:
        """Close the channel; idempotent. ``violation`` says the peer broke the bus
        protocol (closed with 4006 and that reason instead of a normal close)."""
        ...
