"""The trio shell of a multi-source fetch (hearthfile/transfer/fetch.py), driven by
fake sources in-process, for orderings a real network makes rare."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from hearthfile.blobs.chunker import CHUNK_SIZE, Manifest, chunk_blob
from hearthfile.blobs.store import BlobStore
from hearthfile.errors import PeerUnavailable, ServiceError
from hearthfile.identity import NodeId, NodeKey
from hearthfile.transfer import manifests
from hearthfile.transfer.fetch import fetch_blob
from hearthfile.transfer.fileproto import (
    MAX_MANIFEST_BYTES,
    from_ranges,
    manifest_items,
    to_ranges,
)
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


# --- hostile manifest holders (issue 13 item 4) ---------------------------------------------


class ManifestSource(FakeSource):
    """A holder that also serves the manifest; ``silent`` ones never answer at all, and
    ``claimed_size`` overrides the manifest_size it announces."""

    def __init__(
        self,
        manifest: Manifest,
        chunks: list[bytes],
        *,
        silent: bool = False,
        claimed_size: int | None = None,
    ) -> None:
        ready = trio.Event()
        if not silent:
            ready.set()
        super().__init__(manifest, chunks, ready)
        self.claimed_size = claimed_size
        self.manifest_reads = 0

    @asynccontextmanager
    async def open_call(self, cap: str, args: Any = None, **_: Any) -> AsyncIterator[_Stream]:
        if args.get("chunks") != []:
            async with super().open_call(cap, args) as stream:
                yield stream
            return
        self.manifest_reads += 1
        items = list(manifest_items(self._manifest.encode()))
        items[0]["manifest_size"] = self.claimed_size or len(self._manifest.encode())
        yield _Stream(items, self._gate)


async def test_a_silent_holder_does_not_delay_an_honest_one(tmp_path: Path) -> None:
    manifest, chunks = chunk_blob(payload(3 * CHUNK_SIZE, 5))
    silent = ManifestSource(manifest, chunks, silent=True)
    honest = ManifestSource(manifest, chunks)
    store = BlobStore(tmp_path / "data")
    try:
        with trio.fail_after(60):
            await fetch_blob(store, manifest.cid, [silent, honest])
        assert store.has_blob(manifest.cid)
        assert silent.manifest_reads == 1 and honest.manifest_reads == 1
    finally:
        store.close()


async def test_a_silent_only_holder_times_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(manifests, "BASE_TIMEOUT_S", 0.2)
    manifest, chunks = chunk_blob(payload(CHUNK_SIZE, 6))
    store = BlobStore(tmp_path / "data")
    try:
        with trio.fail_after(60), pytest.raises(ServiceError) as info:
            await fetch_blob(store, manifest.cid, [ManifestSource(manifest, chunks, silent=True)])
        assert info.value.code == "unavailable" and "timeout" in info.value.detail
    finally:
        store.close()


async def test_a_holder_claiming_an_impossible_manifest_size_is_passed_over(
    tmp_path: Path,
) -> None:
    manifest, chunks = chunk_blob(payload(2 * CHUNK_SIZE, 7))
    bloated = ManifestSource(manifest, chunks, claimed_size=MAX_MANIFEST_BYTES + 1)
    honest = ManifestSource(manifest, chunks)
    store = BlobStore(tmp_path / "data")
    try:
        with trio.fail_after(60):
            await fetch_blob(store, manifest.cid, [bloated, honest])
        assert store.has_blob(manifest.cid) and honest.manifest_reads == 1
    finally:
        store.close()


class DroppedSource(FakeSource):
    """A connection to a holder that has dropped: every call fails as unavailable."""

    async def call(self, cap: str, args: Any = None, **_: Any) -> Any:
        raise PeerUnavailable(self.peer.short(), "connection lost")

    @asynccontextmanager
    async def open_call(self, cap: str, args: Any = None, **_: Any) -> AsyncIterator[_Stream]:
        raise PeerUnavailable(self.peer.short(), "connection lost")
        yield _Stream([], trio.Event())  # pragma: no cover - makes this a generator


class WholeSource(FakeSource):
    """A holder of every chunk that also answers have-map reads."""

    async def call(self, cap: str, args: Any = None, **_: Any) -> Any:
        if args.get("have"):
            return {"have": to_ranges(range(len(self._chunks)))}
        return await super().call(cap, args)


async def test_a_new_connection_to_a_dropped_source_rejoins_the_fetch(tmp_path: Path) -> None:
    """The holder's first connection drops; the finder then offers a new one to the
    same node: the fetch takes it (it kept the dead one, and waited on a silent holder)."""
    manifest, chunks = chunk_blob(payload(4 * CHUNK_SIZE, 8))
    store = BlobStore(tmp_path / "data")
    store.begin_blob(manifest)
    ready = trio.Event()
    ready.set()
    dropped = DroppedSource(manifest, chunks, ready)
    replacement = WholeSource(manifest, chunks, ready)
    replacement.peer = dropped.peer
    silent = FakeSource(manifest, chunks, trio.Event())  # keeps the fetch from failing
    offered = 0

    async def more_sources() -> list[WholeSource]:
        nonlocal offered
        offered += 1
        return [replacement]

    try:
        with trio.fail_after(30):
            got = await fetch_blob(
                store,
                manifest.cid,
                [dropped, silent],
                more_sources=more_sources,  # type: ignore[list-item]
            )
        assert got.cid == manifest.cid and offered >= 1
        assert b"".join(bytes(v) for v in store.read_blob_stream(manifest.cid)) == b"".join(chunks)
    finally:
        store.close()


# --- the content check at completion, from the chunks as they passed ------------------------


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts whole-blob re-reads (``hash_file``) and chunk reads of the store."""
    from hearthfile.blobs import store as store_module

    counts = {"whole": 0, "chunks": 0}
    real_hash_file, real_read_chunks = store_module.hash_file, BlobStore.read_chunks

    def hash_file(path: str, *, direct: bool) -> bytes:
        counts["whole"] += 1
        return real_hash_file(path, direct=direct)

    def read_chunks(self: BlobStore, manifest: Manifest, indices: list[int]) -> list[bytes]:
        counts["chunks"] += len(indices)
        return real_read_chunks(self, manifest, indices)

    monkeypatch.setattr(store_module, "hash_file", hash_file)
    monkeypatch.setattr(BlobStore, "read_chunks", read_chunks)
    return counts


def whole_source(manifest: Manifest, chunks: list[bytes]) -> FakeSource:
    ready = trio.Event()
    ready.set()
    return FakeSource(manifest, chunks, ready)


async def test_a_fetch_checks_the_content_without_reading_the_blob_back(
    tmp_path: Path, reads: dict[str, int]
) -> None:
    manifest, chunks = chunk_blob(payload(150 * CHUNK_SIZE + 99, 21))
    store = BlobStore(tmp_path / "data")
    try:
        store.begin_blob(manifest)
        with trio.fail_after(60):
            await fetch_blob(store, manifest.cid, [whole_source(manifest, chunks)])
        assert store.has_blob(manifest.cid)
        assert reads == {"whole": 0, "chunks": 0}, "checked as the chunks passed"
        assert b"".join(bytes(v) for v in store.export(manifest.cid)) == b"".join(chunks)
    finally:
        store.close()


async def test_chunks_held_before_the_fetch_are_read_back_alone(
    tmp_path: Path, reads: dict[str, int]
) -> None:
    """A resumed fetch: the chunks stored before it are read back for the content hash
    as it reaches them, the rest hashed as they arrive; never the whole blob."""
    manifest, chunks = chunk_blob(payload(90 * CHUNK_SIZE, 22))
    store = BlobStore(tmp_path / "data")
    held = [*range(0, 10), *range(40, 45), 89]
    try:
        store.begin_blob(manifest)
        with store.batch() as batch:
            batch.write_chunks(manifest, [(i, chunks[i]) for i in held])
        with trio.fail_after(60):
            await fetch_blob(store, manifest.cid, [whole_source(manifest, chunks)])
        assert store.has_blob(manifest.cid)
        assert reads == {"whole": 0, "chunks": len(held)}
        assert b"".join(bytes(v) for v in store.export(manifest.cid)) == b"".join(chunks)
    finally:
        store.close()


async def test_past_the_memory_bound_chunks_are_read_back_and_the_fetch_completes(
    tmp_path: Path, reads: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from hearthfile.transfer import contenthash

    monkeypatch.setattr(contenthash, "MAX_AHEAD_BYTES", 0)  # nothing kept ahead
    manifest, chunks = chunk_blob(payload(70 * CHUNK_SIZE, 23))
    store = BlobStore(tmp_path / "data")
    try:
        store.begin_blob(manifest)
        with trio.fail_after(60):
            await fetch_blob(store, manifest.cid, [whole_source(manifest, chunks)])
        assert store.has_blob(manifest.cid) and reads["whole"] == 0
        assert 0 < reads["chunks"] < len(chunks), "what arrived ahead, not all of it"
        assert b"".join(bytes(v) for v in store.export(manifest.cid)) == b"".join(chunks)
    finally:
        store.close()


async def test_a_false_content_is_refused_by_the_in_order_hash(
    tmp_path: Path, reads: dict[str, int]
) -> None:
    """Every chunk matches its CID, the manifest's content does not: the blob never
    becomes complete and nothing of it is kept."""
    from hearthfile.cids import cid_of

    good, chunks = chunk_blob(payload(20 * CHUNK_SIZE, 24))
    poison = Manifest(good.size, CHUNK_SIZE, good.chunks, cid_of(b"lie"))
    store = BlobStore(tmp_path / "data")
    try:
        store.begin_blob(poison)
        with trio.fail_after(60), pytest.raises(ServiceError) as err:
            await fetch_blob(store, poison.cid, [whole_source(poison, chunks)])
        assert err.value.code == "bad_request" and "content" in err.value.detail
        assert reads == {"whole": 0, "chunks": 0}, "refused by the hash of what passed"
        assert not store.has(poison.cid) and store.count() == 0
    finally:
        store.close()
