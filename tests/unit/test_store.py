"""BlobStore: writes, reads, dedup, pins, GC, corruption, crash leftovers."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hearthfile.blobs.chunker import CHUNK_SIZE, BlobError, chunk_blob
from hearthfile.blobs.store import BlobStore, PinnedError, StoreLocked
from hearthfile.cids import Cid, cid_of, hex_of
from tests.conftest import FakeClock
from tests.unit.test_chunker import BOUNDARY_SIZES, payload

CS = CHUNK_SIZE


def read_all(store: BlobStore, cid: Cid, start: int = 0, end: int | None = None) -> bytes:
    return b"".join(bytes(v) for v in store.read_blob_stream(cid, start, end))


def blob_path(store: BlobStore, cid: Cid) -> Path:
    """Where a complete blob's file is (DESIGN.md section 3)."""
    h = hex_of(cid)
    return store.data_dir / "blobs" / h[:2] / h


def test_store_write_then_read_returns_same_bytes(store: BlobStore) -> None:
    data = payload(2 * CS + 99)
    manifest, chunks = chunk_blob(data, name="x.bin")
    cid = store.write_blob(manifest, chunks)
    assert store.has_blob(cid)
    assert read_all(store, cid) == data
    assert store.read_chunk(manifest.chunks[1]) == chunks[1]
    assert store.read_manifest(cid).chunks == manifest.chunks
    assert store.stat(cid).name == "x.bin"


def test_store_rejects_wrong_cid_on_write(store: BlobStore) -> None:
    good = payload(1000)
    with pytest.raises(BlobError) as err:
        store.write_chunk(cid_of(b"something else"), good)
    assert err.value.code == "hash_mismatch"
    assert not store.has(cid_of(good)) and not store.has(cid_of(b"something else"))
    manifest, chunks = chunk_blob(payload(2 * CS))
    with pytest.raises(BlobError):
        store.write_blob(manifest, [chunks[0], chunks[0]])
    assert not store.has_blob(manifest.cid)
    assert store.total_bytes() == 0
    assert not [p for p in (store.data_dir / "blobs").rglob("*") if p.is_file()]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    size=st.one_of(st.sampled_from(BOUNDARY_SIZES), st.integers(0, 2 * 1024 * 1024)),
    seed=st.integers(0, 2**32),
)
def test_add_read_roundtrip_any_size(store: BlobStore, size: int, seed: int) -> None:
    data = payload(size, seed)
    manifest = store.add_bytes(data)
    assert store.has_blob(manifest.cid)
    assert read_all(store, manifest.cid) == data
    a, b = sorted((seed % (size + 1), (seed // 7) % (size + 1)))
    assert read_all(store, manifest.cid, a, b) == data[a:b]


def test_a_new_blob_takes_chunks_already_held_and_files_are_separate(store: BlobStore) -> None:
    common = payload(3 * CS, seed=1)
    one = store.add_bytes(common + payload(CS, seed=2))
    two, chunks = chunk_blob(common + payload(CS, seed=3))
    store.begin_blob(two)
    assert store.missing_chunks(two.cid) == [3], "held chunks are copied, never fetched"
    with store.batch() as batch:
        batch.write_chunks(two, [(3, chunks[3])])
    assert store.complete_blob(two.cid)
    assert store.total_bytes() == 2 * 4 * CS
    store.remove(one.cid)
    assert not store.has_blob(one.cid) and not blob_path(store, one.cid).exists()
    assert read_all(store, two.cid) == common + payload(CS, seed=3)
    assert not store.has_chunk(one.chunks[3]) and store.has_chunk(two.chunks[0])


def test_a_complete_blob_is_one_file_of_exactly_its_bytes(store: BlobStore) -> None:
    data = payload(3 * CS + 5, seed=8)
    m = store.add_bytes(data)
    path = blob_path(store, m.cid)
    assert path.read_bytes() == data
    assert cid_of(path.read_bytes()) == m.content
    assert store.blob_path(m.cid) == str(path)
    small = store.add_bytes(b"tiny")
    assert store.blob_path(small.cid) is None and not blob_path(store, small.cid).exists()
    assert read_all(store, small.cid) == b"tiny"
    assert not list((store.data_dir / "partial").iterdir())


def test_pinning_prevents_gc(tmp_path: Path, clock: FakeClock) -> None:
    store = BlobStore(tmp_path / "d", max_store_bytes=10 * CS, clock=clock)
    pinned = store.add_bytes(payload(5 * CS, 1), pin=True)
    clock.advance()
    other = store.add_bytes(payload(4 * CS, 2))
    report = store.gc()
    assert report.blobs_removed == (other.cid,)
    assert store.has_blob(pinned.cid)
    store.gc(everything=True)
    assert store.has_blob(pinned.cid)
    with pytest.raises(PinnedError):
        store.remove(pinned.cid)
    store.unpin(pinned.cid)
    assert store.gc(everything=True).blobs_removed == (pinned.cid,)
    store.close()


def test_gc_evicts_lru_unpinned(tmp_path: Path, clock: FakeClock) -> None:
    store = BlobStore(tmp_path / "d", max_store_bytes=101 * CS, clock=clock)
    blobs = []
    for i in range(9):  # 9 x 10 chunks: about 89% of capacity, past the 80% threshold
        blobs.append(store.add_bytes(payload(10 * CS, i)))
        clock.advance()
    clock.advance()
    store.read_manifest(blobs[0].cid)  # blob 0 becomes the most recently used
    report = store.gc()
    assert report.blobs_removed == (blobs[1].cid, blobs[2].cid)
    assert store.total_bytes() <= 0.7 * 101 * CS
    assert store.has_blob(blobs[0].cid)
    assert store.gc().blobs_removed == (), "below the threshold GC does nothing"
    store.close()


def test_corrupt_chunk_is_kept_aside_not_served_and_the_rest_kept(store: BlobStore) -> None:
    data = payload(3 * CS)
    m = store.add_bytes(data)
    other = store.add_bytes(payload(CS, 9))
    path = blob_path(store, m.cid)
    with open(path, "r+b") as f:
        f.seek(CS + 100)
        f.write(bytes([data[CS + 100] ^ 1]))
    with pytest.raises(BlobError) as err:
        read_all(store, m.cid)
    assert err.value.code == "hash_mismatch"
    assert not path.exists(), "the blob is partial now"
    assert list((store.data_dir / "corrupt").iterdir())
    assert not store.has_blob(m.cid)
    assert store.missing_chunks(m.cid) == [1]
    with pytest.raises(BlobError) as err:
        store.read_chunk(m.chunks[1])
    assert err.value.code == "not_found"
    assert store.read_chunk(m.chunks[2]) == data[2 * CS :], "its good chunks are still served"
    assert read_all(store, other.cid) == payload(CS, 9)
    with store.batch() as batch:  # repaired by a fetch of the one chunk
        batch.write_chunks(m, [(1, data[CS : 2 * CS])])
    assert store.complete_blob(m.cid) and read_all(store, m.cid) == data


def test_verify_names_the_blob_a_corrupt_file_affected(store: BlobStore) -> None:
    m = store.add_bytes(payload(2 * CS))
    kept = store.add_bytes(payload(10, 3))
    assert store.verify().clean
    with open(blob_path(store, m.cid), "r+b") as f:
        f.write(b"x" * 10)
    report = store.verify()
    assert not report.clean and len(report.corrupt) == 1
    assert report.affected == [m.cid]
    assert store.verify().clean, "the corrupt chunk was taken out of service"
    assert store.missing_chunks(m.cid) == [0] and store.has_blob(kept.cid)


def test_crash_leftovers_are_cleaned_on_open(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "d")
    kept = store.add_bytes(payload(CS, 1))
    batch = store.batch()
    stray = store.add_stream(io.BytesIO(payload(2 * CS, 2)), batch=batch)
    journal = next((tmp_path / "d" / "tmp").glob("*.journal"))
    assert blob_path(store, stray.cid).exists()
    store.close()  # the batch never commits: as if the process died here
    store = BlobStore(tmp_path / "d")
    assert not journal.exists()
    assert not blob_path(store, stray.cid).exists()
    assert not store.has_blob(stray.cid) and store.has_blob(kept.cid)
    report = store.verify()
    assert report.clean and report.untracked_removed == 0
    store.close()


def test_partial_blob_resume(store: BlobStore) -> None:
    m, chunks = chunk_blob(payload(4 * CS, 5))
    store.begin_blob(m)
    assert not store.has_blob(m.cid)
    assert store.missing_chunks(m.cid) == [0, 1, 2, 3]
    assert (store.data_dir / "partial" / hex_of(m.cid)).stat().st_size == m.size
    with store.batch() as batch:
        batch.write_chunks(m, [(2, chunks[2])])
    assert store.missing_chunks(m.cid) == [0, 1, 3]
    assert store.read_chunk(m.chunks[2]) == chunks[2], "a partial blob serves what it holds"
    assert not store.complete_blob(m.cid)
    with store.batch() as batch:
        batch.write_chunks(m, [(i, chunks[i]) for i in (3, 0, 1)])
    assert store.complete_blob(m.cid) and store.has_blob(m.cid)
    assert blob_path(store, m.cid).read_bytes() == b"".join(chunks)
    assert not list((store.data_dir / "partial").iterdir())


def test_one_writer_process(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "d")
    with pytest.raises(StoreLocked) as err:
        BlobStore(tmp_path / "d")
    assert f"pid {os.getpid()}" in str(err.value)
    store.close()
    BlobStore(tmp_path / "d").close()


def test_list_by_prefix_and_pages(store: BlobStore) -> None:
    cids = sorted(store.add_bytes(payload(100, i)).cid for i in range(30))
    assert [i.cid for i in store.list_cids()] == cids
    page1 = store.list_cids(limit=10)
    page2 = store.list_cids(after=page1[-1].cid, limit=10)
    assert [i.cid for i in page1 + page2] == cids[:20]
    prefix = cids[5][:8]
    assert [i.cid for i in store.list_cids(prefix)] == [c for c in cids if c.startswith(prefix)]


def test_unknown_cids_are_not_found(store: BlobStore) -> None:
    unknown = cid_of(b"nope")
    for call in (
        store.stat,
        store.read_manifest,
        store.read_chunk,
        store.pin,
        lambda c: list(store.read_blob_stream(c)),
    ):
        with pytest.raises(BlobError) as err:
            call(unknown)
        assert err.value.code == "not_found"


def test_gc_everything_frees_every_unpinned_blob(store: BlobStore) -> None:
    common = payload(2 * CS, 30)
    one = store.add_bytes(common + payload(CS, 31))
    two = store.add_bytes(common + payload(CS, 32))
    small = store.add_bytes(payload(100, 34))
    kept = store.add_bytes(payload(CS, 33), pin=True)
    report = store.gc(everything=True)
    assert set(report.blobs_removed) == {one.cid, two.cid, small.cid}
    assert report.bytes_freed == 6 * CS + 100
    assert store.total_bytes() == kept.size
    assert not any(store.has_chunk(c) for c in one.chunks + two.chunks + small.chunks)
    assert store.verify().clean


def test_a_blob_removed_while_being_read_is_not_found_not_corrupt(store: BlobStore) -> None:
    manifest = store.add_bytes(payload(2 * CS, seed=4))
    store.remove(manifest.cid)
    with pytest.raises(BlobError) as caught:
        store.read_chunks(manifest, [0])
    assert caught.value.code == "not_found"
    assert not list((store.data_dir / "corrupt").iterdir())


def test_export_yields_the_whole_blob_and_fails_at_the_end_when_it_rotted(
    store: BlobStore,
) -> None:
    data = payload(20 * CS + 3, seed=12)
    m = store.add_bytes(data)
    small = store.add_bytes(b"tiny")
    assert b"".join(bytes(v) for v in store.export(m.cid)) == data
    assert b"".join(bytes(v) for v in store.export(small.cid)) == b"tiny"
    with open(blob_path(store, m.cid), "r+b") as f:
        f.seek(17 * CS)
        f.write(b"rot")
    got = []
    with pytest.raises(BlobError) as err:
        for view in store.export(m.cid):
            got.append(bytes(view))
    assert err.value.code == "hash_mismatch" and b"".join(got) != data
    assert store.missing_chunks(m.cid) == [17], "the rotten chunk is out of service"


def test_a_mirror_gets_each_chunk_as_it_is_stored_and_the_rest_at_the_end(
    store: BlobStore, tmp_path: Path
) -> None:
    data = payload(6 * CS + 11, seed=13)
    m, chunks = chunk_blob(data)
    store.begin_blob(m)
    with store.batch() as batch:  # held before the mirror began
        batch.write_chunks(m, [(1, chunks[1]), (4, chunks[4])])
    out = tmp_path / "out"
    out.touch()
    with store.mirror(m.cid, str(out)) as mirror:
        with store.batch() as batch:
            batch.write_chunks(m, [(i, chunks[i]) for i in (0, 2, 3, 5, 6)])
        mirror.drain()  # the copies are queued to the mirror's own thread
        assert out.read_bytes()[:CS] == chunks[0], "written as it was stored"
        assert store.complete_blob(m.cid)
        mirror.finish(m)
    assert out.read_bytes() == data
    held = tmp_path / "held"
    held.touch()
    with store.mirror(m.cid, str(held)) as mirror:  # nothing stored meanwhile: all copied
        mirror.finish(m)
    assert held.read_bytes() == data


def test_a_mirror_holds_at_most_its_queue_and_a_failed_copy_fails_finish(
    store: BlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Copies wait in the mirror's queue while its thread is held up (a slow device):
    the store's writer waits past MIRROR_QUEUE; a copy that fails fails ``finish``,
    never the store's write."""
    import threading
    import time

    from hearthfile.blobs import store as store_module
    from hearthfile.blobs.files import BlobFile, Buffer

    data = payload(12 * CS, seed=15)
    m, chunks = chunk_blob(data)
    store.begin_blob(m)
    gate, real_write_at = threading.Event(), BlobFile.write_at
    out = tmp_path / "out"
    stored: list[int] = []  # the store's own writes, by offset

    def held_write_at(self: BlobFile, offset: int, view: Buffer) -> None:
        if self.path == str(out):
            gate.wait(30)
            if offset == 11 * CS:
                raise OSError(28, "No space left on device")
        else:
            stored.append(offset)
        real_write_at(self, offset, view)

    monkeypatch.setattr(BlobFile, "write_at", held_write_at)
    with store.mirror(m.cid, str(out)) as mirror:
        def write_all() -> None:
            with store.batch() as batch:
                batch.write_chunks(m, list(enumerate(chunks)))

        writer = threading.Thread(target=write_all)
        writer.start()
        # The store writes a chunk, then queues its copy: with the copies held up, it
        # stops after MIRROR_QUEUE + 1 chunks (one copy taken by the thread, the rest
        # queued, the next waiting for room).
        bound = store_module.MIRROR_QUEUE + 1
        deadline = time.monotonic() + 30
        while len(stored) < bound and time.monotonic() < deadline:
            writer.join(0.01)
        writer.join(0.5)  # time to overrun the bound, were it not kept
        assert len(stored) == bound and writer.is_alive()
        assert len(mirror._queued) <= store_module.MIRROR_QUEUE
        gate.set()
        writer.join(30)
        assert not writer.is_alive()
        with pytest.raises(BlobError) as err:
            mirror.finish(m)
    assert err.value.code == "disk_full"


def test_chunks_uploaded_ahead_are_taken_by_their_blob_and_kept_once(store: BlobStore) -> None:
    data = payload(2 * CS + 7, seed=14)
    m, chunks = chunk_blob(data)
    for cid, chunk in zip(m.chunks, chunks, strict=True):
        store.write_chunk(cid, chunk)  # a two-phase upload: chunks before the manifest
    assert store.present_chunks(m.chunks) == set(m.chunks)
    assert store.total_bytes() == len(data)
    store.begin_blob(m, origin="added")
    assert store.missing_chunks(m.cid) == [] and store.complete_blob(m.cid)
    assert store.total_bytes() == len(data), "the loose copies went once the blob held them"
    assert read_all(store, m.cid) == data


def test_verify_reads_every_chunk_once_and_leaves_the_gc_order_alone(
    store: BlobStore, clock: FakeClock
) -> None:
    old = store.add_bytes(payload(5 * CS, seed=15))
    clock.advance()
    new = store.add_bytes(payload(3 * CS, seed=16))
    clock.advance()
    report = store.verify()
    assert report.clean and report.chunks_checked == 8
    assert store.stat(old.cid).last_access < store.stat(new.cid).last_access
    with open(blob_path(store, old.cid), "r+b") as f:  # two chunks rot
        for index in (1, 3):
            f.seek(index * CS)
            f.write(b"rot")
    report = store.verify()
    assert len(report.corrupt) == 2 and report.chunks_checked == 8
    assert store.missing_chunks(old.cid) == [1, 3], "the chunks after a bad one are checked too"
    assert store.read_chunk(old.chunks[4]) == payload(5 * CS, seed=15)[4 * CS :]


def test_a_single_short_chunk_is_hashed_once_and_its_cid_is_the_content() -> None:
    for size in (1, 4096, CS - 1):
        data = payload(size, seed=size)
        manifest, _ = chunk_blob(data)
        assert manifest.content == cid_of(data) == manifest.chunks[0]
