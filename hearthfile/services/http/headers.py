"""HTTP header logic of the gateway (pure): byte ranges, entity tags, disposition.

DESIGN.md section 10. No maintained parser fits here: the Range parsers that
exist live inside web frameworks (werkzeug, starlette) that the gateway does
not otherwise need, so ``parse_ranges`` is a small strict function of RFC 9110
section 14 with its own tests. Everything else in HTTP (request lines, header
framing, chunked bodies, multipart) is parsed by h11 and python-multipart.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Final

#: More ranges than this in one request are refused (416): each range costs a
#: multipart part and a seek, and many tiny ranges are a known amplification.
MAX_RANGES: Final = 64

_RANGE_SPEC: Final = re.compile(r"(\d*)-(\d*)")
_ETAG: Final = re.compile(r'\s*(W/)?"([^"]*)"\s*')


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes [start, end) of the representation (end exclusive)."""

    start: int
    end: int

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end - 1}/{size}"

    @property
    def length(self) -> int:
        return self.end - self.start


class Unsatisfiable(Exception):
    """No range of a well-formed Range header fits the representation (-> 416)."""


def parse_ranges(header: str | None, size: int) -> list[ByteRange] | None:
    """The ranges a ``Range`` header asks for, or None to send the whole body.

    A header that is not a well-formed ``bytes=`` set is ignored, as RFC 9110
    section 14.2 allows; a well-formed one none of whose ranges fits ``size``, or
    one with more than ``MAX_RANGES`` ranges, raises ``Unsatisfiable``. Ranges
    that do not fit are dropped and the others kept; ``last`` past the end is
    clipped; a suffix range ``-N`` means the last N bytes.
    """
    if header is None:
        return None
    unit, sep, specs = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    parts = [p.strip() for p in specs.split(",")]
    parsed: list[tuple[str, str]] = []
    for part in parts:
        if not part:
            continue  # RFC 9110 list syntax allows empty elements
        match = _RANGE_SPEC.fullmatch(part)
        if match is None or match.group(1) == match.group(2) == "":
            return None
        first, last = match.group(1), match.group(2)
        if first and last and int(last) < int(first):
            return None
        parsed.append((first, last))
    if not parsed:
        return None
    if len(parsed) > MAX_RANGES:
        raise Unsatisfiable(f"more than {MAX_RANGES} ranges")
    ranges = [r for r in (_resolve(first, last, size) for first, last in parsed) if r]
    if not ranges:
        raise Unsatisfiable("no range fits the blob")
    return ranges


def _resolve(first: str, last: str, size: int) -> ByteRange | None:
    if not first:
        suffix = int(last)
        return ByteRange(max(size - suffix, 0), size) if suffix and size else None
    start = int(first)
    if start >= size:
        return None
    end = size if not last else min(int(last) + 1, size)
    return ByteRange(start, end)


def etag_of(cid: str) -> str:
    return f'"{cid}"'


def none_match(header: str | None, etag: str) -> bool:
    """True when ``If-None-Match`` matches (-> 304): ``*``, or any listed tag by
    weak comparison (RFC 9110 section 13.1.2). An unparsable header never matches."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return etag.strip('"') in _tags(header)


def range_applies(if_range: str | None, etag: str) -> bool:
    """Whether a ``Range`` is honoured under ``If-Range`` (RFC 9110 section 13.1.5):
    only a strong tag equal to ours; a date never matches (blobs carry no date)."""
    if if_range is None:
        return True
    match = _ETAG.fullmatch(if_range)
    return match is not None and match.group(1) is None and match.group(2) == etag.strip('"')


def _tags(header: str) -> set[str]:
    tags: set[str] = set()
    for item in header.split(","):
        match = _ETAG.fullmatch(item)
        if match is not None:
            tags.add(match.group(2))
    return tags


def content_disposition(name: str | None, *, attachment: bool) -> bytes:
    """``inline``/``attachment`` with the name (RFC 6266).

    ``filename*`` carries the exact name, percent-encoded UTF-8, for clients that
    read it (browsers). ``filename`` carries it too, as raw UTF-8 in quotes: RFC
    9110 allows those bytes in a field value, and clients that ignore
    ``filename*`` (``curl -J``) then still save under the stored name.
    """
    kind = b"attachment" if attachment else b"inline"
    clean = safe_filename(name)
    if not clean:
        return kind
    quoted = clean.replace("\\", "\\\\").replace('"', '\\"')
    value = kind + b'; filename="' + quoted.encode() + b'"'
    if not clean.isascii():
        value += b"; filename*=UTF-8''" + urllib.parse.quote(clean, safe="").encode()
    return value


def safe_filename(name: str | None) -> str:
    """The name without control characters or directory parts (a header and a
    file name, never a path)."""
    if not name:
        return ""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(ch for ch in base if ch.isprintable()).strip()
