"""Websocket masking at memory speed, for the frames a client sends.

RFC 6455 has a client XOR every frame it sends with a 4-byte key, repeated, and the
server undo it. wsproto does both in Python, at about 0.5 ms per 256 KiB chunk on each
side: more than the encryption of the chunk. Bulk data flows client -> server in a push
and whenever a node serves chunks to a peer it dialed (a swarm member serving the one
it connected to). ``install()`` replaces wsproto's masker with ``Masker``, which XORs
the data as 32-bit words with numpy (about 20 us per chunk); the secure channel masks the
frames it builds itself with ``mask_in_place`` (bus/wsframe.py). Frames under
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
        out = bytearray(data)
        mask_in_place(memoryview(out), self._key)
        turn = size % 4
        self._key = self._key[turn:] + self._key[:turn]
        return out


def mask_in_place(data: memoryview, key: bytes) -> None:
    """XOR ``data`` with ``key`` repeated, from the key's first byte (one whole
    payload): numpy for bulk, Python integers for the rest."""
    size = len(data)
    if size >= BULK_BYTES:
        np = _numpy()
        words = size // 4
        np.frombuffer(data, dtype=np.uint32, count=words).__ixor__(
            np.frombuffer(key, dtype=np.uint32)[0]
        )
        for i in range(words * 4, size):  # at most three bytes past the last word
            data[i] ^= key[i % 4]
    elif size:
        repeated = (key * (size // 4 + 1))[:size]
        mixed = int.from_bytes(data, "little") ^ int.from_bytes(repeated, "little")
        data[:] = mixed.to_bytes(size, "little")


def install() -> None:
    """Make every wsproto connection of this process mask with ``Masker``.

    wsproto has no hook for this, so its masker class is replaced; the node calls
    this once at start-up (``node.serve_node``), never as a side effect of an import.
    """
    _frames.XorMaskerSimple = Masker  # type: ignore[misc,assignment]


def installed() -> bool:
    current: object = _frames.XorMaskerSimple
    return current is Masker
