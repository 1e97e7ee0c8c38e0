"""Chunking, manifests and chunk verification (pure).

A blob is cut into 256 KiB chunks (the last one shorter; an empty blob has
none). Its manifest lists the chunk CIDs in order with the size, the chunk size
and the BLAKE3 of the whole content, and the blob's CID is the CID of the
manifest's canonical encoding (DESIGN.md section 2). ``name`` and ``mime`` ride
beside the manifest as advice and are not part of the CID, so the same bytes
added under two names are one blob.

Everything here streams: ``ManifestBuilder`` takes chunks one at a time and
``iter_chunks`` reads a file into one reused buffer, so a 10 GiB file never
sits in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Final

import blake3

from hearthfile.cids import (
    Cid,
    CidError,
    canonical_decode,
    canonical_encode,
    cid_from_digest,
    cid_of,
    is_cid,
)
from hearthfile.errors import HearthError

CHUNK_SIZE: Final = 256 * 1024
MANIFEST_VERSION: Final = 1
#: Manifests list one CID per chunk; this bounds a manifest we accept from a
#: peer to about 73 MiB of text (a 1 TiB blob), far above any real need.
MAX_CHUNKS: Final = 4 * 1024 * 1024
_MANIFEST_KEYS: Final = frozenset({"v", "size", "chunk_size", "chunks", "content"})

BLOB_ERROR_CODES: Final = frozenset(
    {"not_found", "hash_mismatch", "io_error", "disk_full", "manifest_invalid"}
)


class BlobError(HearthError):
    """A store or chunk operation failed; ``code`` is one of BLOB_ERROR_CODES."""

    def __init__(self, code: str, detail: str = "") -> None:
        assert code in BLOB_ERROR_CODES, code
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Manifest:
    size: int
    chunk_size: int
    chunks: tuple[Cid, ...]
    content: Cid
    name: str | None = None
    mime: str | None = None
    #: The canonical bytes whose BLAKE3 is the blob CID (advisory fields excluded),
    #: and that CID: computed once, since every write and every send needs them.
    encoded: bytes = field(init=False, repr=False, compare=False)
    cid: Cid = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        encoded = canonical_encode(
            {
                "v": MANIFEST_VERSION,
                "size": self.size,
                "chunk_size": self.chunk_size,
                "chunks": list(self.chunks),
                "content": self.content,
            }
        )
        object.__setattr__(self, "encoded", encoded)
        object.__setattr__(self, "cid", cid_of(encoded))

    def encode(self) -> bytes:
        return self.encoded

    def chunk_length(self, index: int) -> int:
        """Length of chunk ``index``: full chunks, except a shorter last one."""
        return min(self.chunk_size, self.size - index * self.chunk_size)

    def chunk_range(self, start: int, end: int) -> range:
        """Indices of the chunks covering bytes [start, end)."""
        if end <= start:
            return range(0)
        return range(start // self.chunk_size, (end - 1) // self.chunk_size + 1)


def expected_chunk_count(size: int, chunk_size: int) -> int:
    return -(-size // chunk_size)


def decode_manifest(data: bytes, expected_cid: Cid | None = None) -> Manifest:
    """Parse and check a manifest; raises BlobError('manifest_invalid') on anything off."""
    if expected_cid is not None and cid_of(data) != expected_cid:
        raise BlobError("manifest_invalid", f"manifest bytes do not hash to {expected_cid}")
    try:
        raw = canonical_decode(data, max_items=MAX_CHUNKS)
    except ValueError as exc:
        raise BlobError("manifest_invalid", str(exc)) from None
    if not isinstance(raw, dict) or set(raw) != _MANIFEST_KEYS:
        raise BlobError("manifest_invalid", f"expected exactly the keys {sorted(_MANIFEST_KEYS)}")
    size, chunk_size, chunks = raw["size"], raw["chunk_size"], raw["chunks"]
    if raw["v"] != MANIFEST_VERSION:
        raise BlobError("manifest_invalid", f"unsupported manifest version {raw['v']!r}")
    if type(size) is not int or size < 0:
        raise BlobError("manifest_invalid", f"size must be a non-negative integer, got {size!r}")
    if not isinstance(chunks, list):
        raise BlobError("manifest_invalid", "chunks must be a list of CIDs")
    if not all(is_cid(c) for c in chunks) or not is_cid(raw["content"]):
        raise BlobError("manifest_invalid", "chunks and content must be CIDs")
    manifest = Manifest(size, chunk_size, tuple(chunks), raw["content"])
    check_manifest(manifest)
    return manifest


def check_manifest(manifest: Manifest) -> None:
    """The checks of DESIGN.md section 5 that need no chunk bytes: the one chunk
    size of version 1, and as many chunks as the size needs. (That every chunk
    but the last holds ``chunk_size`` bytes and the last 1..chunk_size is then a
    check on each chunk's bytes, ``check_chunk``; ``content`` is checked over the
    whole bytes before the blob is visible.)"""
    if type(manifest.chunk_size) is not int or manifest.chunk_size != CHUNK_SIZE:
        raise BlobError(
            "manifest_invalid", f"chunk_size must be {CHUNK_SIZE}, got {manifest.chunk_size!r}"
        )
    if len(manifest.chunks) != expected_chunk_count(manifest.size, manifest.chunk_size):
        raise BlobError("manifest_invalid", "chunk count does not match size / chunk_size")
    if len(manifest.chunks) > MAX_CHUNKS:
        raise BlobError("manifest_invalid", f"more than {MAX_CHUNKS} chunks")


def check_chunk(manifest: Manifest, index: int, data: bytes | bytearray | memoryview) -> Cid:
    """Check chunk ``index`` of ``manifest`` against its CID and then its length;
    returns the CID. A chunk that hashes right but is not the length the manifest
    gives it proves the manifest false (``manifest_invalid``), not the bytes."""
    expected = manifest.chunks[index]
    verify_chunk(data, expected)
    if len(data) != manifest.chunk_length(index):
        raise BlobError(
            "manifest_invalid",
            f"chunk {index} holds {len(data)} bytes, the manifest gives it "
            f"{manifest.chunk_length(index)}",
        )
    return expected


def verify_chunk(data: bytes | bytearray | memoryview, expected_cid: Cid) -> None:
    """Raise BlobError('hash_mismatch') unless BLAKE3(data) is ``expected_cid``."""
    actual = cid_of(data)
    if actual != expected_cid:
        raise BlobError("hash_mismatch", f"chunk hashes to {actual}, expected {expected_cid}")


class ManifestBuilder:
    """Builds a manifest from chunks fed in order, hashing each byte once per digest."""

    def __init__(self, chunk_size: int = CHUNK_SIZE) -> None:
        self.chunk_size = chunk_size
        self._content = blake3.blake3()
        self._chunks: list[Cid] = []
        self._size = 0
        self._short_seen = False

    def add(self, chunk: bytes | bytearray | memoryview) -> Cid:
        """Account for the next chunk and return its CID."""
        if self._short_seen or not 0 < len(chunk) <= self.chunk_size:
            raise ValueError("only the last chunk may be shorter than chunk_size, none empty")
        self._short_seen = len(chunk) < self.chunk_size
        cid = cid_of(chunk)
        if self._chunks or not self._short_seen:
            self._content.update(chunk)
        # else: a short first chunk is the whole blob, its CID the content (finish)
        self._chunks.append(cid)
        self._size += len(chunk)
        return cid

    def finish(self, name: str | None = None, mime: str | None = None) -> Manifest:
        whole = len(self._chunks) == 1 and self._short_seen  # hashed once, as its chunk
        content = self._chunks[0] if whole else cid_from_digest(self._content.digest())
        return Manifest(self._size, self.chunk_size, tuple(self._chunks), content, name, mime)


def iter_chunks(
    stream: BinaryIO, chunk_size: int = CHUNK_SIZE, buf: bytearray | None = None
) -> Iterator[memoryview]:
    """Yield successive chunks of ``stream`` from one reused buffer (``buf`` when
    given: many small files then cost no fresh allocation each).

    Each memoryview is valid only until the next one is requested: callers hash
    and write it, then move on, so memory stays at one chunk whatever the size.
    """
    view = memoryview(buf if buf is not None else bytearray(chunk_size))[:chunk_size]
    while True:
        filled = 0
        while filled < chunk_size:
            n = stream.readinto(view[filled:])  # type: ignore[attr-defined]
            if not n:
                break
            filled += n
        if filled:
            yield view[:filled]
        if filled < chunk_size:
            return


def chunk_bytes(data: bytes, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    for offset in range(0, len(data), chunk_size):
        yield data[offset : offset + chunk_size]


def chunk_blob(
    data: bytes, *, name: str | None = None, mime: str | None = None
) -> tuple[Manifest, list[bytes]]:
    """Split in-memory bytes into chunks and their manifest (for small blobs and tests)."""
    builder = ManifestBuilder()
    chunks = list(chunk_bytes(data))
    for chunk in chunks:
        builder.add(chunk)
    return builder.finish(name, mime), chunks


def reassemble(chunks: Iterable[bytes | memoryview]) -> bytes:
    """Concatenate chunks in order; callers verify each chunk first."""
    return b"".join(chunks)


__all__ = [
    "BLOB_ERROR_CODES",
    "CHUNK_SIZE",
    "BlobError",
    "CidError",
    "Manifest",
    "ManifestBuilder",
    "check_chunk",
    "check_manifest",
    "chunk_blob",
    "decode_manifest",
    "iter_chunks",
    "reassemble",
    "verify_chunk",
]
