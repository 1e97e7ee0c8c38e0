"""Manifest validity (DESIGN.md section 5) in the store, and the poison manifest of
issue 13 item 1: a manifest that lies about a held chunk never costs the good blob."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from hearthfile.blobs.chunker import (
    CHUNK_SIZE,
    BlobError,
    Manifest,
    chunk_blob,
    decode_manifest,
)
from hearthfile.blobs.files import BlobFile, Buffer
from hearthfile.blobs.store import BlobStore
from hearthfile.cids import canonical_encode, cid_of
from tests.unit.test_chunker import payload
from tests.unit.test_store import read_all

CS = CHUNK_SIZE


def invalid_manifests() -> dict[str, tuple[Manifest, list[bytes]]]:
    """Each case of issue 14's "Manifest validity", with the chunks a peer would send."""
    good, chunks = chunk_blob(payload(2 * CS, 11))
    small = payload(100, 12)
    tail = payload(10, 13)
    whole = payload(2 * CS, 14)
    return {
        # content is not the BLAKE3 of the chunks
        "false content": (Manifest(good.size, CS, good.chunks, cid_of(b"lie")), chunks),
        # a non-final chunk of 100 bytes (the size makes it look whole)
        "short middle chunk": (
            Manifest(CS + 10, CS, (cid_of(small), cid_of(tail)), cid_of(small + tail)),
            [small, tail],
        ),
        # chunks totalling 524,288 bytes where size says 262,154
        "long last chunk": (
            Manifest(CS + 10, CS, (cid_of(whole[:CS]), cid_of(whole[CS:])), cid_of(whole)),
            [whole[:CS], whole[CS:]],
        ),
    }


@pytest.mark.parametrize("case", sorted(invalid_manifests()))
def test_write_blob_refuses_each_invalid_manifest(store: BlobStore, case: str) -> None:
    manifest, chunks = invalid_manifests()[case]
    with pytest.raises(BlobError) as err:
        store.write_blob(manifest, chunks)
    assert err.value.code == "manifest_invalid"
    assert not store.has_blob(manifest.cid)
    assert store.list_cids(complete_only=False) == [] and store.total_bytes() == 0


def test_a_false_content_never_becomes_visible(store: BlobStore) -> None:
    manifest, chunks = invalid_manifests()["false content"]
    store.begin_blob(manifest)
    for cid, data in zip(manifest.chunks, chunks, strict=True):
        store.write_chunk(cid, data)
    with pytest.raises(BlobError) as err:
        store.complete_blob(manifest.cid)
    assert err.value.code == "manifest_invalid"
    assert not store.has_blob(manifest.cid)
    with pytest.raises(BlobError):
        store.stat(manifest.cid)  # nothing of it kept
    assert store.total_bytes() == 0


def test_wrong_chunk_size_or_count_is_refused_before_anything_is_kept(store: BlobStore) -> None:
    good, _ = chunk_blob(payload(CS + 1))
    fields = {"v": 1, "size": good.size, "chunk_size": CS, "chunks": list(good.chunks)}
    fields["content"] = good.content
    for bad in ({**fields, "chunk_size": CS // 2}, {**fields, "chunks": good.chunks[:1]}):
        with pytest.raises(BlobError) as err:
            decode_manifest(canonical_encode(bad))
        assert err.value.code == "manifest_invalid"
    with pytest.raises(BlobError):
        store.begin_blob(Manifest(good.size, CS // 2, good.chunks + good.chunks, good.content))
    assert store.list_cids(complete_only=False) == []


def poison_for(store: BlobStore) -> tuple[Manifest, Manifest, bytes]:
    """A pinned good blob, and a manifest listing its first chunk with a false size."""
    data = payload(2 * CS + 5, 21)
    good = store.add_bytes(data, pin=True)
    poison = Manifest(10, CS, (good.chunks[0],), cid_of(b"anything"))
    return good, poison, data


def test_a_poison_manifest_is_refused_and_the_good_blob_survives(store: BlobStore) -> None:
    good, poison, data = poison_for(store)
    with pytest.raises(BlobError) as err:
        store.begin_blob(poison)
    assert err.value.code == "manifest_invalid"
    assert read_all(store, good.cid) == data
    assert store.stat(good.cid).pinned and store.verify().clean


def test_a_read_through_a_lying_manifest_never_condemns_a_good_chunk(store: BlobStore) -> None:
    """A lying manifest is never in the index, so a read through it finds nothing;
    the good blob and its chunk are untouched."""
    good, poison, data = poison_for(store)
    with pytest.raises(BlobError) as err:
        store.read_chunks(poison, [0])
    assert err.value.code == "not_found"
    assert not list((store.data_dir / "corrupt").iterdir())
    assert read_all(store, good.cid) == data and store.has_blob(good.cid)
    report = store.verify()
    assert report.clean and report.untracked_removed == 0


def test_a_full_disk_mid_group_leaves_no_index_row_without_its_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13 item 8: the chunks written before the disk filled are kept and
    indexed; the one that failed is not named by the index."""
    store = BlobStore(tmp_path / "d")
    m, chunks = chunk_blob(payload(4 * CS, 31))
    store.begin_blob(m)
    room = [2]
    real_write = BlobFile.write_at

    def filling(self: BlobFile, offset: int, data: Buffer) -> None:
        if room[0] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        room[0] -= 1
        real_write(self, offset, data)

    monkeypatch.setattr(BlobFile, "write_at", filling)
    batch = store.batch()
    with pytest.raises(BlobError) as err:
        batch.write_chunks(m, list(enumerate(chunks)))
    assert err.value.code == "disk_full"
    batch.commit()  # what a fetch does with the verified chunks it has
    assert store.missing_chunks(m.cid) == [2, 3]
    room[0] = 1_000_000
    for i in (2, 3):
        store.write_chunk(m.chunks[i], chunks[i])
    assert store.complete_blob(m.cid) and read_all(store, m.cid) == payload(4 * CS, 31)
    assert store.verify().clean
    store.close()
