"""BlobStore: writes, reads, dedup, pins, GC, corruption, crash leftovers."""

from __future__ import annotations

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


def chunk_path(store: BlobStore, cid: Cid) -> Path:
    h = hex_of(cid)
    return store.data_dir / "blobs" / h[:2] / h[2:]


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
    assert not any((store.data_dir / "blobs" / hex_of(manifest.chunks[0])[:2]).glob("*"))


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


def test_dedup_shares_chunks_and_gc_keeps_shared(store: BlobStore) -> None:
    common = payload(3 * CS, seed=1)
    one = store.add_bytes(common + payload(CS, seed=2))
    two = store.add_bytes(common + payload(CS, seed=3))
    assert one.chunks[:3] == two.chunks[:3]
    assert store.total_bytes() < 2 * 4 * CS
    store.remove(one.cid)
    assert not store.has_blob(one.cid)
    assert read_all(store, two.cid) == common + payload(CS, seed=3)
    assert not store.has_chunk(one.chunks[3])
    assert all(chunk_path(store, c).exists() for c in two.chunks)
    assert not chunk_path(store, one.chunks[3]).exists()


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


def test_corrupt_chunk_is_moved_aside_not_served(store: BlobStore) -> None:
    data = payload(3 * CS)
    m = store.add_bytes(data)
    other = store.add_bytes(payload(CS, 9))
    path = chunk_path(store, m.chunks[1])
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0x01
    path.write_bytes(raw)
    with pytest.raises(BlobError) as err:
        read_all(store, m.cid)
    assert err.value.code == "hash_mismatch"
    assert not path.exists()
    assert list((store.data_dir / "blobs" / ".corrupt").iterdir())
    assert not store.has_blob(m.cid)
    assert store.missing_chunks(m.cid) == [1]
    with pytest.raises(BlobError) as err:
        store.read_chunk(m.chunks[1])
    assert err.value.code == "not_found"
    assert read_all(store, other.cid) == payload(CS, 9)
    store.write_blob(m, [data[i * CS : (i + 1) * CS] for i in range(3)])  # repair
    assert store.has_blob(m.cid) and read_all(store, m.cid) == data


def test_verify_reports_corruption_and_restores_manifests(store: BlobStore) -> None:
    m = store.add_bytes(payload(2 * CS))
    manifest_file = chunk_path(store, m.cid).with_name(hex_of(m.cid)[2:] + ".manifest")
    manifest_file.write_bytes(b"junk")
    assert store.verify().clean and store.verify().manifests_restored == 0
    path = chunk_path(store, m.chunks[0])
    path.write_bytes(b"x" * CS)
    report = store.verify()
    assert not report.clean and len(report.corrupt) == 1
    assert store.verify().clean, "the corrupt file was moved aside and dropped"


def test_manifest_restored_from_index(store: BlobStore) -> None:
    m = store.add_bytes(payload(CS + 1))
    name = hex_of(m.cid)
    mf = store.data_dir / "blobs" / name[:2] / (name[2:] + ".manifest")
    mf.write_bytes(b"garbage")
    assert store.read_manifest(m.cid).chunks == m.chunks
    assert mf.read_bytes() == m.encode()


def test_crash_leftovers_are_cleaned_on_open(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "d")
    kept = store.add_bytes(payload(CS, 1))
    batch = store.batch()
    stray, chunks = chunk_blob(payload(2 * CS, 2))
    batch.write_chunk(stray.chunks[0], chunks[0])
    journal = next((tmp_path / "d" / "blobs" / ".tmp").glob("*.journal"))
    assert chunk_path(store, stray.chunks[0]).exists()
    store.close()  # the batch never commits: as if the process died here
    store = BlobStore(tmp_path / "d")
    assert not journal.exists()
    assert not chunk_path(store, stray.chunks[0]).exists()
    assert store.has_blob(kept.cid)
    report = store.verify()
    assert report.clean and report.untracked_removed == 0
    store.close()


def test_partial_blob_resume(store: BlobStore) -> None:
    m, chunks = chunk_blob(payload(4 * CS, 5))
    store.begin_blob(m)
    assert not store.has_blob(m.cid)
    assert store.missing_chunks(m.cid) == [0, 1, 2, 3]
    store.write_chunk(m.chunks[2], chunks[2])
    assert store.missing_chunks(m.cid) == [0, 1, 3]
    assert not store.complete_blob(m.cid)
    for i in (0, 1, 3):
        store.write_chunk(m.chunks[i], chunks[i])
    assert store.complete_blob(m.cid) and store.has_blob(m.cid)


def test_a_group_of_chunks_writes_each_missing_one_once(store: BlobStore) -> None:
    m, chunks = chunk_blob(payload(3 * CS, 6))
    store.begin_blob(m)
    store.write_chunk(m.chunks[0], chunks[0])
    held = chunk_path(store, m.chunks[0]).stat().st_ino
    group = [(m.chunks[i], chunks[i]) for i in (0, 1, 2, 1)]  # one held, one twice
    with store.batch() as batch:
        batch.write_verified_chunks(group)
        assert batch.bytes_written == 2 * CS
    assert chunk_path(store, m.chunks[0]).stat().st_ino == held  # not rewritten
    assert store.present_chunks(m.chunks) == set(m.chunks)
    assert store.complete_blob(m.cid) and read_all(store, m.cid) == b"".join(chunks)


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


def test_gc_group_frees_chunks_shared_only_among_victims(store: BlobStore) -> None:
    common = payload(2 * CS, 30)
    one = store.add_bytes(common + payload(CS, 31))
    two = store.add_bytes(common + payload(CS, 32))
    kept = store.add_bytes(payload(CS, 33), pin=True)
    report = store.gc(everything=True)
    assert set(report.blobs_removed) == {one.cid, two.cid}
    assert store.total_bytes() == CS + len(kept.encode()), "shared chunks went with their users"
    assert not any(store.has_chunk(c) for c in one.chunks + two.chunks)
    assert store.verify().clean


def test_a_chunk_removed_while_being_read_is_not_found_not_corrupt(
    store: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A removed chunk's file is reused for the next write, so a read that opened it
    # just before can see other bytes; that must read as gone, not as corruption.
    manifest = store.add_bytes(payload(2 * CS, seed=4))
    store.remove(manifest.cid)
    monkeypatch.setattr(store.backend, "load", lambda name, limit: memoryview(b"\0" * CS))
    with pytest.raises(BlobError) as caught:
        store.read_chunks(manifest, [0])
    assert caught.value.code == "not_found"
    assert not list((store.data_dir / "blobs" / ".corrupt").iterdir())
