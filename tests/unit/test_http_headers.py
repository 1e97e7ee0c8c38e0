"""The gateway's pure header logic: ranges, entity tags, Content-Disposition."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hearthfile.services.http.headers import (
    MAX_RANGES,
    ByteRange,
    Unsatisfiable,
    content_disposition,
    none_match,
    parse_ranges,
    range_applies,
    safe_filename,
)

ETAG = '"blake3:' + "ab" * 32 + '"'


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=6-16", 57, [ByteRange(6, 17)]),
        ("bytes=0-0", 1, [ByteRange(0, 1)]),
        ("bytes=50-", 57, [ByteRange(50, 57)]),
        ("bytes=-7", 57, [ByteRange(50, 57)]),
        ("bytes=-100", 57, [ByteRange(0, 57)]),
        ("bytes=10-1000", 57, [ByteRange(10, 57)]),
        ("bytes=0-1, 5-7", 57, [ByteRange(0, 2), ByteRange(5, 8)]),
        ("BYTES = 0-1", 57, [ByteRange(0, 2)]),
        ("bytes=0-1,,5-7", 57, [ByteRange(0, 2), ByteRange(5, 8)]),
        ("bytes=0-1,100-200", 57, [ByteRange(0, 2)]),  # the unsatisfiable one is dropped
    ],
)
def test_ranges_parse(header: str, size: int, expected: list[ByteRange]) -> None:
    assert parse_ranges(header, size) == expected


@pytest.mark.parametrize(
    "header",
    [None, "items=0-1", "bytes", "bytes=", "bytes=-", "bytes=a-b", "bytes=5-1", "bytes=1-2-3"],
)
def test_malformed_ranges_are_ignored(header: str | None) -> None:
    assert parse_ranges(header, 57) is None


@pytest.mark.parametrize(
    ("header", "size"),
    [("bytes=57-", 57), ("bytes=100-200", 57), ("bytes=-0", 57), ("bytes=0-", 0)],
)
def test_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(Unsatisfiable):
        parse_ranges(header, size)


def test_too_many_ranges_refused() -> None:
    header = "bytes=" + ",".join(f"{i}-{i}" for i in range(MAX_RANGES + 1))
    with pytest.raises(Unsatisfiable):
        parse_ranges(header, 10_000)
    assert parse_ranges("bytes=" + ",".join(f"{i}-{i}" for i in range(MAX_RANGES)), 10_000)


@given(st.integers(0, 10_000), st.integers(0, 10_000), st.integers(1, 10_000))
def test_ranges_stay_inside_the_blob(first: int, last: int, size: int) -> None:
    lo, hi = min(first, last), max(first, last)
    try:
        ranges = parse_ranges(f"bytes={lo}-{hi}", size)
    except Unsatisfiable:
        assert lo >= size
        return
    assert ranges == [ByteRange(lo, min(hi + 1, size))]
    assert all(0 <= r.start < r.end <= size for r in ranges)


def test_content_range_text() -> None:
    assert ByteRange(6, 17).content_range(57) == "bytes 6-16/57"


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        (None, False),
        ("*", True),
        (ETAG, True),
        ("W/" + ETAG, True),
        (f'"other", {ETAG}', True),
        ('"other"', False),
        ("garbage", False),
    ],
)
def test_if_none_match(header: str | None, matches: bool) -> None:
    assert none_match(header, ETAG) is matches


def test_if_range_needs_a_strong_equal_tag() -> None:
    assert range_applies(None, ETAG)
    assert range_applies(ETAG, ETAG)
    assert not range_applies("W/" + ETAG, ETAG)
    assert not range_applies('"other"', ETAG)
    assert not range_applies("Fri, 04 Dec 2026 10:00:00 GMT", ETAG)


def test_content_disposition() -> None:
    assert content_disposition(None, attachment=False) == b"inline"
    assert content_disposition("a.txt", attachment=True) == b'attachment; filename="a.txt"'
    assert content_disposition('a"b.txt', attachment=False) == b'inline; filename="a\\"b.txt"'
    value = content_disposition("héllo wörld.txt", attachment=False)
    assert value == (
        'inline; filename="héllo wörld.txt"'.encode()
        + b"; filename*=UTF-8''h%C3%A9llo%20w%C3%B6rld.txt"
    )


def test_safe_filename_drops_paths_and_controls() -> None:
    assert safe_filename("../../etc/passwd") == "passwd"
    assert safe_filename("a\r\nb.txt") == "ab.txt"
    assert safe_filename("dir\\x.txt") == "x.txt"
    assert safe_filename("") == ""
