"""Websocket masking at memory speed, for the frames a client sends.

RFC 6455 has a client XOR every frame it sends with a 4-byte key, repeated, and the
server undo it. wsproto does both in Python, at about 0.5 ms per 256 KiB chunk on each
side: more than the encryption of the chunk. Bulk data flows client -> server in a push
and whenever a node serves chunks to a peer it dialed (a swarm member serving the one
it connected to). ``install()`` replaces wsproto's masker with ``Masker``, which XORs
the data as 32-bit words with numpy (about 20 us per chunk). Frames under
``BULK_BYTES``, which is all a CLI sends, keep wsproto's own path, so only a process
that masks bulk data imports numpy.
"""

from __future__ import annotations

import functools
from typing import Any, Final

import wsproto.frame_protocol as _frames

#: Shorter data is masked by wsproto's own code (importing numpy costs ~0.2 s).
BULK_BYTES: Final = 16 * 1024

_WSPROTO_MASKER: Final = _frames.XorMaskerSimple


@functools.cache
def _numpy() -> Any:
    import numpy

    return numpy


class Masker:
    """Drop-in for wsproto's ``XorMaskerSimple``: successive ``process`` calls
    continue the key where the last one stopped (a frame's payload arrives in parts)."""

    __slots__ = ("_key",)

    def __init__(self, masking_key: bytes | bytearray) -> None:
        self._key = bytes(masking_key)

    def process(self, data: bytes | bytearray) -> bytearray:
        size = len(data)
        if size < BULK_BYTES:
            out = _WSPROTO_MASKER(self._key).process(data)  # type: ignore[arg-type]
        else:
            out = bytearray(data)
            np = _numpy()
            words = size // 4
            key = np.frombuffer(self._key, dtype=np.uint32)[0]
            np.frombuffer(out, dtype=np.uint32, count=words).__ixor__(key)
            for i in range(words * 4, size):  # at most three bytes past the last word
                out[i] ^= self._key[i % 4]
        turn = size % 4
        self._key = self._key[turn:] + self._key[:turn]
        return out


def install() -> None:
    """Make every wsproto connection of this process mask with ``Masker``.

    wsproto has no hook for this, so its masker class is replaced; the node calls
    this once at start-up (``node.serve_node``), never as a side effect of an import.
    """
    _frames.XorMaskerSimple = Masker  # type: ignore[misc,assignment]


def installed() -> bool:
    current: object = _frames.XorMaskerSimple
    return current is Masker
