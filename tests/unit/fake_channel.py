"""An in-memory ``MessageChannel`` pair over trio memory channels, for bus tests.

A fake of the real interface (not a mock): ordered whole messages, back pressure from a
small buffer, and the same ``PeerUnavailable`` the secure transport raises on close.
"""

from __future__ import annotations

import trio

from hearthfile.errors import PeerUnavailable
from hearthfile.identity import NodeId, NodeKey


class MemoryChannel:
    """One end of an in-memory channel; ``peer`` is the other end's node."""

    def __init__(
        self,
        peer: NodeId,
        send: trio.MemorySendChannel[bytes],
        receive: trio.MemoryReceiveChannel[bytes],
    ) -> None:
        self._peer = peer
        self._send = send
        self._receive = receive
        self.sent_messages = 0
        self.violation: str | None = None

    @property
    def peer(self) -> NodeId:
        return self._peer

    async def send_message(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await self._send.send(bytes(data))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise PeerUnavailable(self._peer.short(), "channel closed") from exc
        self.sent_messages += 1

    async def receive_message(self) -> bytes:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError) as exc:
            raise PeerUnavailable(self._peer.short(), "channel closed") from exc

    async def aclose(self, violation: str | None = None) -> None:
        self.violation = self.violation or violation
        await self._send.aclose()
        await self._receive.aclose()


def channel_pair(
    a: NodeId | None = None, b: NodeId | None = None, *, buffer: int = 16
) -> tuple[MemoryChannel, MemoryChannel]:
    """Two connected ends: the first is node ``a`` talking to ``b``, the second ``b`` to ``a``."""
    a = a or NodeKey.generate().node_id
    b = b or NodeKey.generate().node_id
    a_to_b_send, a_to_b_receive = trio.open_memory_channel[bytes](buffer)
    b_to_a_send, b_to_a_receive = trio.open_memory_channel[bytes](buffer)
    return MemoryChannel(b, a_to_b_send, b_to_a_receive), MemoryChannel(
        a, b_to_a_send, a_to_b_receive
    )
