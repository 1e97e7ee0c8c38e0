"""Bounds shared by several parts of the node (pure, the bottom layer).

Each bound is one constant or one type here, imported by the part that enforces
it and by config.py, which checks the operator's settings against it: no copies
kept equal by tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

KiB: Final = 1024
MiB: Final = 1024 * KiB
GiB: Final = 1024 * MiB

#: The one chunk size of version 1 manifests (DESIGN.md section 5).
CHUNK_BYTES: Final = 256 * KiB
#: A frame must carry a whole chunk plus its header, or transfers stall.
MIN_MESSAGE_BYTES: Final = CHUNK_BYTES + KiB
#: One frame is held whole in memory.
MAX_MESSAGE_BYTES: Final = 64 * MiB
#: A chunk plus generous room for the frame header.
DEFAULT_MAX_MESSAGE_BYTES: Final = CHUNK_BYTES + 64 * KiB

#: CIDs one gossip record may carry (added and removed together).
MAX_RECORD_CIDS: Final = 8192
#: Entries in one gossip digest.
MAX_DIGEST_ENTRIES: Final = 4096
#: Bytes a gossip record takes besides its CIDs (addresses, numbers, signature)...
RECORD_OVERHEAD_BYTES: Final = 2304
#: ...and per CID.
RECORD_CID_BYTES: Final = 34
#: Largest gossip message: one must fit in the smallest frame allowed.
MAX_EXCHANGE_BYTES: Final = 256 * KiB


def record_bytes(cids: int) -> int:
    """The most a gossip record of ``cids`` CIDs can take on the wire."""
    return cids * RECORD_CID_BYTES + RECORD_OVERHEAD_BYTES


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
    receive_buffer_bytes: int = 1 * MiB
