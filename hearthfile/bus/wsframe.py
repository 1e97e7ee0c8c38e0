"""RFC 6455 framing of the messages a secure channel sends (pure).

A secure frame is encrypted into one buffer that keeps ``HEADROOM`` free bytes in
front (``SecureSession.encrypt_frame(..., headroom=HEADROOM)``); ``frame_in_place``
writes the websocket header into the end of that room, masks the payload in place when
the sender is a client, and returns the whole websocket frame as one view of the
buffer. bus/client.py sends it on the stream in one write: no copy of the payload
after the cipher wrote it (wsproto's own path copies it twice and builds the header in
Python per frame). What goes on the wire is exactly what wsproto would have sent: one
unfragmented binary frame (FIN set, opcode 2), the shortest length encoding, and from a
client a fresh random 4-byte masking key.
"""

from __future__ import annotations

import struct
from typing import Final

from hearthfile.bus.wsmask import mask_in_place

#: Largest header: 2 bytes, a 64-bit extended length and a masking key.
HEADROOM: Final = 2 + 8 + 4
#: FIN and the binary opcode.
_FIN_BINARY: Final = 0x82
_MASKED: Final = 0x80
_SHORT_LIMIT: Final = 126  # lengths below this fit the first length byte
_TWO_BYTE_LIMIT: Final = 1 << 16
MASK_KEY_BYTES: Final = 4


def binary_frame_header(length: int, mask_key: bytes | None) -> bytes:
    """The header of one final binary frame of ``length`` payload bytes."""
    masked = _MASKED if mask_key is not None else 0
    if length < _SHORT_LIMIT:
        head = struct.pack(">BB", _FIN_BINARY, masked | length)
    elif length < _TWO_BYTE_LIMIT:
        head = struct.pack(">BBH", _FIN_BINARY, masked | 126, length)
    else:
        head = struct.pack(">BBQ", _FIN_BINARY, masked | 127, length)
    return head if mask_key is None else head + mask_key


def frame_in_place(buffer: bytearray, mask_key: bytes | None) -> memoryview:
    """The websocket frame around ``buffer[HEADROOM:]`` (the payload), built in place.

    ``mask_key`` (4 random bytes, fresh per frame) is given by a client and masks
    the payload; a server sends ``None``.
    """
    if mask_key is not None and len(mask_key) != MASK_KEY_BYTES:
        raise ValueError("a websocket masking key is 4 bytes")
    view = memoryview(buffer)
    header = binary_frame_header(len(buffer) - HEADROOM, mask_key)
    start = HEADROOM - len(header)
    view[start:HEADROOM] = header
    if mask_key is not None:
        mask_in_place(view[HEADROOM:], mask_key)
    return view[start:]
