"""A blob's content hash, fed in index order while its chunks arrive in any order (pure).

A manifest's ``content`` must be checked against the BLAKE3 of the whole blob before
the blob becomes complete (DESIGN.md section 5: the blob CID proves the manifest's
bytes, not that its chunk list and its ``content`` agree). Reading the blob back at
completion to do so costs a second pass over every byte; but every chunk a fetch
stores has passed through memory once already, verified against its chunk CID.
BLAKE3 must see the bytes in order, and a fetch takes chunks in a windowed random
order (``windowed_order`` in transfer/schedule.py), so ``InOrderHash`` keeps the
chunks that arrive ahead of the hash frontier (the first chunk not yet hashed) and
feeds the hasher as the frontier reaches them.

Every chunk of the blob is in one of these states:

- coming: this fetch will store it (it was missing when the fetch began);
- kept: it arrived ahead of the frontier and its bytes are held here;
- stored: its bytes are in the store and committed, not here (held before the fetch
  began: copied by ``begin_blob``, a resumed partial), so the shell reads it back
  when the frontier reaches it (``reads_due``);
- written: it arrived ahead of the frontier when ``max_ahead_bytes`` were held
  already, so it was not kept; it becomes stored at the shell's next commit
  (``committed``) and is read back like one;
- hashed: behind the frontier.

Memory: the chunks kept are at most ``max_ahead_bytes`` (``MAX_AHEAD_BYTES``, 32 MiB,
by default); a chunk past it is read back rather than held. In a fetch that goes well
the frontier trails the newest arrivals by about one order window plus the requests
in flight (64 + 64 chunks at most, usually far fewer); a chunk stuck on a slow
source holds the frontier back, and the bound stops the held chunks from growing
behind it.

Only verified bytes may be added (checked against the chunk's CID by the caller):
the digest is then the BLAKE3 of exactly what the store holds, and the caller
compares it with the manifest's ``content``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import blake3

#: Bytes of chunks kept ahead of the hash frontier, per fetch (see the module docstring).
MAX_AHEAD_BYTES: Final = 32 * 1024 * 1024

Buffer = bytes | bytearray | memoryview

_COMING: Final = 0
_STORED: Final = 1
_WRITTEN: Final = 2


class InOrderHash:
    """The BLAKE3 of a blob of ``chunk_count`` chunks, fed in index order.

    ``coming`` names the chunks this fetch will ``add``; every other one is stored
    already and comes back through ``reads_due``.
    """

    def __init__(
        self, chunk_count: int, coming: Iterable[int], max_ahead_bytes: int | None = None
    ) -> None:
        if max_ahead_bytes is None:
            max_ahead_bytes = MAX_AHEAD_BYTES
        if chunk_count < 1 or max_ahead_bytes < 0:
            raise ValueError("need chunk_count >= 1 and max_ahead_bytes >= 0")
        self._count = chunk_count
        self._max_ahead = max_ahead_bytes
        self._state = bytearray([_STORED]) * chunk_count
        for index in coming:
            self._state[index] = _COMING
        self._kept: dict[int, Buffer] = {}
        self._written: list[int] = []
        self._hasher = blake3.blake3()
        #: The first chunk not yet hashed (``chunk_count`` once all are).
        self.frontier = 0
        #: Bytes held in ``kept`` chunks now, and the most held at once.
        self.kept_bytes = self.peak_kept_bytes = 0
        #: Chunks hashed from a read back (``reads_due``) rather than as they arrived.
        self.read_back = 0

    def add(self, index: int, data: Buffer) -> None:
        """A chunk's verified bytes: arrived in this fetch, or read back. A chunk
        hashed or kept already (a duplicate) is ignored."""
        if not 0 <= index < self._count:
            raise IndexError(f"chunk {index} of {self._count}")
        if index < self.frontier or index in self._kept:
            return
        if index == self.frontier:
            self.read_back += self._state[index] != _COMING
            self._hasher.update(data)
            self.frontier += 1
            self._advance()
        elif self.kept_bytes + len(data) <= self._max_ahead:
            self._kept[index] = data
            self.kept_bytes += len(data)
            self.peak_kept_bytes = max(self.peak_kept_bytes, self.kept_bytes)
        elif self._state[index] == _COMING:
            self._state[index] = _WRITTEN
            self._written.append(index)

    def keep_none(self) -> None:
        """Keep no chunk ahead of the frontier from now on, and let go of those kept
        (each was written: it is read back after the next commit). For a fetch whose
        chunks stopped coming roughly in order (spread over the blob in a swarm)."""
        self._max_ahead = 0
        for index in self._kept:
            self._state[index] = _WRITTEN
            self._written.append(index)
        self._kept.clear()
        self.kept_bytes = 0

    def committed(self) -> None:
        """Everything the shell has written so far is committed: chunks not kept can
        be read back from the store now."""
        for index in self._written:
            self._state[index] = _STORED
        self._written.clear()

    def reads_due(self, limit: int) -> list[int]:
        """Up to ``limit`` chunks from the frontier on, in order, that the shell must
        read back from the store and ``add`` for the frontier to move (empty when
        the frontier waits for a chunk still coming, or is at the end)."""
        due: list[int] = []
        index = self.frontier
        while (
            len(due) < limit
            and index < self._count
            and index not in self._kept
            and self._state[index] == _STORED
        ):
            due.append(index)
            index += 1
        return due

    def digest(self) -> bytes | None:
        """The BLAKE3 of the whole blob once every chunk is hashed, else None."""
        return self._hasher.digest() if self.frontier == self._count else None

    def _advance(self) -> None:
        while (data := self._kept.pop(self.frontier, None)) is not None:
            self.kept_bytes -= len(data)
            self._hasher.update(data)
            self.frontier += 1
