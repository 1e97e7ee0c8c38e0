"""A byte stream from a trio task to the store's blocking ``add_stream`` (trio shell).

An HTTP upload and ``hearthfile add -`` through a daemon both arrive as blocks in
trio tasks, while the store chunks and hashes in a worker thread; this is the
reader between them.
"""

from __future__ import annotations

import trio

from hearthfile.blobs.chunker import BlobError


class ChannelReader:
    """A blocking file-like reader (``readinto``) over a trio channel of blocks, for the
    store's ``add_stream`` in a worker thread. A closed channel after ``aborted``
    is an error, so a cut upload never becomes a short blob."""

    def __init__(self, receive: trio.MemoryReceiveChannel[bytes]) -> None:
        self._receive = receive
        self._block = memoryview(b"")
        self.aborted = False

    def readinto(self, view: memoryview) -> int:
        while not self._block:
            try:
                block = trio.from_thread.run(self._receive.receive)
            except trio.EndOfChannel:
                if self.aborted:
                    raise BlobError("io_error", "stream cut short") from None
                return 0
            except trio.Cancelled:
                raise BlobError("io_error", "stream cut short") from None
            self._block = memoryview(block)
        n = min(len(view), len(self._block))
        view[:n] = self._block[:n]
        self._block = self._block[n:]
        return n
