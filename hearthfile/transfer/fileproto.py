"""Message shapes of the file.* capabilities, shared by callers and callees (pure).

Both the file service (which answers) and the transfer code (which asks) speak
these shapes, so they live here, below both. Every function that reads a
peer's message validates it and raises ``ServiceError("bad_request")`` on
anything off: peers are hostile until proven otherwise.

A manifest can be larger than one bus frame (a 10 GiB blob lists 40,960
chunks, about 3 MB), so it travels as a run of ``{"manifest": <piece>}`` items
of at most ``MANIFEST_PIECE_BYTES`` each, announced by ``manifest_size`` and
checked against the blob CID once whole. Lists of chunk indices travel as
ranges ``[[start, stop], ...]`` for the same reason: contiguous runs make them
small, and ``MAX_RANGES_PER_ITEM`` bounds any one item.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Final

from hearthfile.blobs.chunker import (
    MAX_CHUNKS,
    BlobError,
    Manifest,
    decode_manifest,
)
from hearthfile.cids import Cid, is_cid
from hearthfile.errors import ServiceError

MANIFEST_PIECE_BYTES: Final = 192 * 1024
#: Largest manifest the format allows: per chunk one CID (a msgpack str8 of
#: "blake3:" and 64 hex digits: 2 + 71 bytes), plus the map, its five keys, the
#: array header, size, chunk_size and content (under 160 bytes). A peer announcing
#: more is lying, and is refused before we buffer any of it.
MAX_MANIFEST_BYTES: Final = MAX_CHUNKS * (2 + len("blake3:") + 64) + 160
MAX_RANGES_PER_ITEM: Final = 8192
MAX_LIST_LIMIT: Final = 1000
MAX_ADVERTISE_CIDS: Final = 1024
MAX_NAME_BYTES: Final = 1024


def bad(detail: str) -> ServiceError:
    return ServiceError("bad_request", detail)


def want_cid(value: object, what: str = "cid") -> Cid:
    if not is_cid(value):
        raise bad(f"{what} must be 'blake3:' and 64 lowercase hex digits")
    return Cid(str(value))


def want_int(value: object, what: str, low: int = 0, high: int = 2**63 - 1) -> int:
    if type(value) is not int or not low <= value <= high:
        raise bad(f"{what} must be an integer in {low}..{high}")
    return value


def want_map(value: object, what: str = "args") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad(f"{what} must be a map")
    return value


def optional_text(value: object, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value.encode()) > MAX_NAME_BYTES:
        raise bad(f"{what} must be text of at most {MAX_NAME_BYTES} bytes")
    return value


# -- manifests in pieces ------------------------------------------------------


def manifest_items(manifest_bytes: bytes) -> Iterator[dict[str, Any]]:
    """The stream items carrying a manifest (at least one, even when empty)."""
    view = memoryview(manifest_bytes)
    for offset in range(0, max(len(view), 1), MANIFEST_PIECE_BYTES):
        yield {"manifest": bytes(view[offset : offset + MANIFEST_PIECE_BYTES])}


class ManifestReceiver:
    """Collects manifest pieces until ``size`` bytes, then checks them against ``cid``."""

    def __init__(self, cid: Cid, size: int) -> None:
        self.cid = cid
        self.size = want_int(size, "manifest_size", 1, MAX_MANIFEST_BYTES)
        self._parts: list[bytes] = []
        self._have = 0

    def feed(self, item: object) -> Manifest | None:
        """Take one item; return the verified manifest once it is whole."""
        piece = want_map(item, "stream item").get("manifest")
        if not isinstance(piece, bytes) or not piece or self._have + len(piece) > self.size:
            raise bad("expected a manifest piece within manifest_size")
        self._parts.append(piece)
        self._have += len(piece)
        if self._have < self.size:
            return None
        try:
            return decode_manifest(b"".join(self._parts), self.cid)
        except BlobError as exc:
            raise bad(f"manifest: {exc.detail}") from None


# -- index ranges ---------------------------------------------------------------


def to_ranges(indices: Iterable[int]) -> list[list[int]]:
    """Sorted indices as [[start, stop), ...] runs."""
    ranges: list[list[int]] = []
    for i in indices:
        if ranges and ranges[-1][1] == i:
            ranges[-1][1] = i + 1
        else:
            ranges.append([i, i + 1])
    return ranges


def range_items(ranges: list[list[int]], key: str) -> Iterator[dict[str, Any]]:
    for start in range(0, len(ranges), MAX_RANGES_PER_ITEM):
        yield {key: ranges[start : start + MAX_RANGES_PER_ITEM]}


def from_ranges(value: object, limit: int) -> list[int]:
    """Validate ranges within [0, limit) (ascending, disjoint) and expand them."""
    if not isinstance(value, list) or len(value) > MAX_RANGES_PER_ITEM:
        raise bad(f"ranges must be a list of at most {MAX_RANGES_PER_ITEM} [start, stop] pairs")
    out: list[int] = []
    floor = 0
    for pair in value:
        if not isinstance(pair, list) or len(pair) != 2:
            raise bad("each range is [start, stop]")
        start = want_int(pair[0], "range start", floor, limit)
        stop = want_int(pair[1], "range stop", start + 1, limit)
        out.extend(range(start, stop))
        floor = stop
    return out


# -- file.read arguments ---------------------------------------------------------


def read_selection(args: dict[str, Any], manifest: Manifest) -> list[int]:
    """Which chunk indices a file.read of a blob asks for: all, listed, or a byte range."""
    count = len(manifest.chunks)
    if "chunks" in args and "range" in args:
        raise bad("give chunks or range, not both")
    if "chunks" in args:
        return from_ranges(args["chunks"], count)
    if "range" in args:
        span = args["range"]
        if not isinstance(span, list) or len(span) != 2:
            raise bad("range is [start, end) in bytes")
        start = want_int(span[0], "range start", 0, manifest.size)
        end = want_int(span[1], "range end", start, manifest.size)
        return list(manifest.chunk_range(start, end))
    return list(range(count))
