"""The trio shell of a multi-source fetch (hearthfile/transfer/fetch.py), driven by
fake sources in-process, for orderings a real network makes rare."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from hearthfile.blobs.chunker import CHUNK_SIZE, Manifest, chunk_blob
from hearthfile.blobs.store import BlobStore
from hearthfile.identity import NodeId, NodeKey
from hearthfile.transfer.fetch import fetch_blob
from hearthfile.transfer.fileproto import from_ranges
from hearthfile.transfer.peer import Progress
from tests.unit.test_chunker import payload


class _Stream:
    """A streamed file.read answer: each chunk once ``gate`` is set, then a result."""

    def __init__(self, items: list[dict[str, Any]], gate: trio.Event) -> None:
        self._items, self._gate = items, gate

    def __aiter__(self) -> _Stream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        await self._gate.wait()
        if not self._items:
            raise StopAsyncIteration
        return self._items.pop(0)  # no checkpoint between the wake-up and the item

    async def result(self) -> Any:
        return {}

    async def send(self, item: Any) -> None:
        raise AssertionError("a fetch sends nothing on file.read")

    async def send_end(self) -> None:
        pass


class FakeSource:
    """Serves ``chunks`` by file.read; answers only once ``gate`` is set."""

    def __init__(self, manifest: Manifest, chunks: list[bytes], gate: trio.Event) -> None:
        self.peer: NodeId = NodeKey.generate().node_id
        self._manifest, self._chunks, self._gate = manifest, chunks, gate

    async def call(self, cap: str, args: Any = None, **_: Any) -> Any:
        await self._gate.wait()
        return {"data": self._chunks[self._manifest.chunks.index(args["cid"])]}

    @asynccontextmanager
    async def open_call(self, cap: str, args: Any = None, **_: Any) -> AsyncIterator[_Stream]:
        wanted = from_ranges(args["chunks"], len(self._chunks))
        yield _Stream([{"i": i, "data": self._chunks[i]} for i in sorted(wanted)], self._gate)


async def test_a_chunk_landing_after_its_fetch_ended_is_dropped(tmp_path: Path) -> None:
    """The slow source is released in the very step the fast one completes the fetch:
    its chunk then reaches a fetch that has shut its writer. The fetch succeeds."""
    manifest, chunks = chunk_blob(payload(4 * CHUNK_SIZE, 3))
    store = BlobStore(tmp_path / "data")
    store.begin_blob(manifest)
    ready, slow_gate = trio.Event(), trio.Event()
    ready.set()
    fast = FakeSource(manifest, chunks, ready)
    slow = FakeSource(manifest, chunks, slow_gate)

    def progress(state: Progress) -> None:
        if state.chunks_done == state.chunks_total:
            slow_gate.set()  # wakes the slow source as the fetch finishes

    with trio.fail_after(30):
        got = await fetch_blob(store, manifest.cid, [fast, slow], progress=progress)
    assert got.cid == manifest.cid and slow_gate.is_set()
    assert store.has_blob(manifest.cid)
    assert b"".join(bytes(v) for v in store.read_blob_stream(manifest.cid)) == b"".join(chunks)
    store.close()
