"""GC against the store's own limits (file.max_store_bytes, file.min_free_bytes),
never taking pinned blobs or blobs being read or fetched (DESIGN.md section 3)."""

from __future__ import annotations

from pathlib import Path

import trio

from hearthfile.blobs.chunker import CHUNK_SIZE, chunk_blob
from hearthfile.blobs.facade import holding_blob
from hearthfile.blobs.store import BlobStore
from hearthfile.cids import Cid
from tests.conftest import FakeClock
from tests.unit.test_chunker import payload

CS = CHUNK_SIZE


def test_no_limit_and_enough_free_disk_means_nothing_is_evicted(tmp_path: Path) -> None:
    """Whatever the disk's usage, a store under its own limits keeps everything."""
    store = BlobStore(tmp_path / "d", min_free_bytes=1)
    blob = store.add_bytes(payload(2 * CS, 1))
    assert store.bytes_to_free() == 0
    assert store.gc().blobs_removed == () and store.has_blob(blob.cid)
    store.close()


def test_low_free_disk_evicts_unpinned_lru_but_never_pinned(
    tmp_path: Path, clock: FakeClock
) -> None:
    store = BlobStore(tmp_path / "d", clock=clock, min_free_bytes=1 << 62)
    pinned = store.add_bytes(payload(CS, 1), pin=True)
    cache = []
    for seed in range(2, 5):
        clock.advance()
        cache.append(store.add_bytes(payload(CS, seed)))
    report = store.gc()
    assert report.blobs_removed == tuple(b.cid for b in cache)  # oldest first
    assert store.has_blob(pinned.cid) and store.gc().blobs_removed == ()
    store.close()


def test_gc_never_takes_a_blob_being_read(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "d", max_store_bytes=CS)
    data = payload(3 * CS, 7)
    blob = store.add_bytes(data)
    stream = store.read_blob_stream(blob.cid)
    first = bytes(next(stream))
    assert store.gc(everything=True).blobs_removed == ()
    rest = b"".join(bytes(v) for v in stream)
    assert first + rest == data
    assert store.gc().blobs_removed == (blob.cid,)
    store.close()


async def test_gc_never_takes_a_blob_being_fetched(tmp_path: Path) -> None:
    """A partial blob held by a fetch (``holding_blob``) survives GC; once the fetch
    ends it is an ordinary cache entry again."""
    store = BlobStore(tmp_path / "d", max_store_bytes=CS)
    manifest, chunks = chunk_blob(payload(2 * CS, 8))
    store.begin_blob(manifest)
    store.write_chunk(manifest.chunks[0], chunks[0])
    during: list[tuple[Cid, ...]] = []

    @holding_blob
    async def fake_fetch(s: BlobStore, cid: Cid) -> None:
        during.append(s.gc(everything=True).blobs_removed)
        s.write_chunk(manifest.chunks[1], chunks[1])
        assert s.complete_blob(cid)
        await trio.lowlevel.checkpoint()

    await fake_fetch(store, manifest.cid)
    assert during == [()] and store.has_blob(manifest.cid)
    assert store.gc().blobs_removed == (manifest.cid,)
    store.close()


def test_store_limit_evicts_down_to_the_target(tmp_path: Path, clock: FakeClock) -> None:
    store = BlobStore(
        tmp_path / "d", clock=clock, max_store_bytes=10 * CS, gc_threshold=0.8, gc_target=0.5
    )
    blobs = []
    for seed in range(9):
        clock.advance()
        blobs.append(store.add_bytes(payload(CS, seed)))
    report = store.gc()
    assert store.total_bytes() <= 5 * CS
    assert report.blobs_removed == tuple(b.cid for b in blobs[: len(report.blobs_removed)])
    store.close()
