"""Chunking, manifests and chunk verification."""

from __future__ import annotations

import io

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hearthfile.blobs.chunker import (
    CHUNK_SIZE,
    BlobError,
    Manifest,
    ManifestBuilder,
    chunk_blob,
    decode_manifest,
    iter_chunks,
    reassemble,
    verify_chunk,
)
from hearthfile.cids import CidError, canonical_decode, canonical_encode, cid_of, parse_cid

CS = CHUNK_SIZE
BOUNDARY_SIZES = [0, 1, CS - 1, CS, CS + 1, 2 * CS, 3 * CS + 7, 5 * 1024 * 1024 + 3]


def payload(size: int, seed: int = 0) -> bytes:
    return blake3.blake3(seed.to_bytes(8, "big")).digest(length=size)


def test_chunk_then_reassemble_roundtrip() -> None:
    data = payload(3 * CS + 1234)
    manifest, chunks = chunk_blob(data)
    assert [len(c) for c in chunks] == [CS, CS, CS, 1234]
    for cid, chunk in zip(manifest.chunks, chunks, strict=True):
        verify_chunk(chunk, cid)
    assert reassemble(chunks) == data
    assert manifest.size == len(data)
    assert manifest.content == cid_of(data)


def test_manifest_cid_deterministic() -> None:
    data = payload(CS + 5)
    first, _ = chunk_blob(data, name="a.txt", mime="text/plain")
    second, _ = chunk_blob(data, name="other-name.bin")
    assert first.cid == second.cid, "advisory name/mime are not part of the CID"
    assert first.encode() == second.encode()
    assert first.cid == cid_of(first.encode())
    assert chunk_blob(payload(CS + 5, seed=1))[0].cid != first.cid


def test_verify_chunk_detects_one_bit_flip() -> None:
    chunk = payload(CS)
    cid = cid_of(chunk)
    verify_chunk(chunk, cid)
    for bit in (0, 7, 8 * CS // 2, 8 * CS - 1):
        flipped = bytearray(chunk)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(BlobError) as err:
            verify_chunk(flipped, cid)
        assert err.value.code == "hash_mismatch"


@settings(max_examples=40, deadline=None)
@given(
    size=st.one_of(st.sampled_from(BOUNDARY_SIZES), st.integers(0, 3 * 1024 * 1024)),
    seed=st.integers(0, 2**32),
)
def test_streamed_chunks_match_in_memory_chunking(size: int, seed: int) -> None:
    data = payload(size, seed)
    manifest, chunks = chunk_blob(data)
    builder = ManifestBuilder()
    streamed = []
    for view in iter_chunks(io.BytesIO(data)):
        builder.add(view)
        streamed.append(bytes(view))
    assert streamed == chunks
    assert builder.finish() == manifest
    assert len(manifest.chunks) == -(-size // CS)
    assert decode_manifest(manifest.encode(), manifest.cid) == manifest


def test_empty_blob_has_zero_chunks() -> None:
    manifest, chunks = chunk_blob(b"")
    assert chunks == [] and manifest.chunks == () and manifest.size == 0
    assert manifest.content == cid_of(b"")


def test_iter_chunks_handles_short_reads() -> None:
    class Trickle(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.data = data

        def readable(self) -> bool:
            return True

        def readinto(self, b: memoryview) -> int:  # type: ignore[override]
            n = min(len(b), 1000, len(self.data))
            b[:n] = self.data[:n]
            self.data = self.data[n:]
            return n

    data = payload(CS + 10)
    assert [bytes(v) for v in iter_chunks(Trickle(data))] == [data[:CS], data[CS:]]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "blake3:",
        "blake3:" + "A" * 64,
        "blake3:" + "0" * 63,
        "sha256:" + "0" * 64,
        "blake3:" + "0" * 64 + "\n",
        "../../etc/passwd",
        "blake3:" + "0" * 65,
    ],
)
def test_parse_cid_is_strict(text: str) -> None:
    with pytest.raises(CidError):
        parse_cid(text)


def test_decode_manifest_rejects_malformed() -> None:
    good, _ = chunk_blob(payload(CS + 1))
    fields = {
        "v": 1,
        "size": good.size,
        "chunk_size": CS,
        "chunks": list(good.chunks),
        "content": good.content,
    }
    bad_variants = [
        {**fields, "v": 2},
        {**fields, "size": CS * 5},
        {**fields, "chunk_size": 10},
        {**fields, "chunks": [*good.chunks, good.chunks[0]]},
        {**fields, "content": "nope"},
        {**fields, "extra": 1},
    ]
    for variant in bad_variants:
        with pytest.raises(BlobError) as err:
            decode_manifest(canonical_encode(variant))
        assert err.value.code == "manifest_invalid"
    with pytest.raises(BlobError):
        decode_manifest(b"\xc1garbage")
    with pytest.raises(BlobError):
        decode_manifest(good.encode(), expected_cid=cid_of(b"other"))


def test_manifest_chunk_geometry() -> None:
    m = Manifest(3 * CS + 5, CS, tuple(cid_of(bytes([i])) for i in range(4)), cid_of(b""))
    assert [m.chunk_length(i) for i in range(4)] == [CS, CS, CS, 5]
    assert list(m.chunk_range(0, 1)) == [0]
    assert list(m.chunk_range(CS - 1, CS + 1)) == [0, 1]
    assert list(m.chunk_range(CS, 2 * CS)) == [1]
    assert list(m.chunk_range(5, 5)) == []


def test_canonical_decode_refuses_nested_floats() -> None:
    import msgpack

    with pytest.raises(ValueError):
        canonical_decode(msgpack.packb({"a": [1.5]}), max_items=10)
