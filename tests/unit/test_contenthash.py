"""The in-order content hash (hearthfile/transfer/contenthash.py) and the windowed
random order a fetch takes chunks in (``windowed_order``, transfer/schedule.py)."""

from __future__ import annotations

import random

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hearthfile.transfer.contenthash import InOrderHash
from hearthfile.transfer.schedule import windowed_order


def chunks_of(count: int, size: int = 8) -> list[bytes]:
    return [bytes([i % 251]) * size + i.to_bytes(4, "big") for i in range(count)]


def whole(chunks: list[bytes]) -> bytes:
    return blake3.blake3(b"".join(chunks)).digest()


def test_chunks_in_any_order_hash_as_the_blob_in_order() -> None:
    chunks = chunks_of(10)
    content = InOrderHash(10, range(10))
    for index in [3, 1, 0, 9, 2, 5, 4, 8, 7, 6]:
        assert content.digest() is None, "not before the last chunk"
        content.add(index, chunks[index])
    assert content.frontier == 10 and content.kept_bytes == 0
    assert content.digest() == whole(chunks)


def test_duplicates_are_ignored() -> None:
    chunks = chunks_of(4)
    content = InOrderHash(4, range(4))
    for index in [2, 2, 0, 0, 1, 3, 3, 1]:
        content.add(index, chunks[index])
    assert content.digest() == whole(chunks)


def test_a_chunk_held_before_is_read_back_when_the_frontier_reaches_it() -> None:
    chunks = chunks_of(6)
    content = InOrderHash(6, [0, 2, 3, 5])  # 1 and 4 are stored already
    assert content.reads_due(10) == []
    content.add(0, chunks[0])
    assert content.reads_due(10) == [1], "the frontier is at 1"
    content.add(3, chunks[3])
    assert content.reads_due(10) == [1], "nothing past a chunk still coming"
    content.add(1, chunks[1])
    assert content.reads_due(10) == [], "2 is still coming"
    content.add(2, chunks[2])
    assert content.frontier == 4 and content.reads_due(10) == [4]
    content.add(4, chunks[4])
    content.add(5, chunks[5])
    assert content.digest() == whole(chunks)
    assert content.read_back == 2


def test_reads_due_is_a_run_of_at_most_limit() -> None:
    content = InOrderHash(10, [9])
    assert content.reads_due(4) == [0, 1, 2, 3]
    assert content.reads_due(100) == list(range(9))


def test_past_the_memory_bound_a_chunk_is_read_back_after_the_next_commit() -> None:
    chunks = chunks_of(6)
    size = len(chunks[0])
    content = InOrderHash(6, range(6), max_ahead_bytes=2 * size)
    for index in [1, 2, 3, 4]:  # 0 is stuck on a slow source
        content.add(index, chunks[index])
    assert content.kept_bytes == content.peak_kept_bytes == 2 * size, "1 and 2 kept, not 3, 4"
    content.add(0, chunks[0])
    assert content.frontier == 3
    assert content.reads_due(10) == [], "3 and 4 are written but not committed"
    content.committed()
    assert content.reads_due(10) == [3, 4]
    content.add(3, chunks[3])
    content.add(4, chunks[4])
    content.add(5, chunks[5])
    assert content.digest() == whole(chunks)


def test_out_of_range_is_refused() -> None:
    content = InOrderHash(3, range(3))
    with pytest.raises(IndexError):
        content.add(3, b"x")
    with pytest.raises(ValueError):
        InOrderHash(0, [])


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 40).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.sets(st.integers(0, n - 1)),  # held before the fetch
            st.permutations(range(n)),
            st.lists(st.integers(0, n - 1), max_size=10),  # duplicates delivered
            st.integers(0, 6),  # chunks of memory
            st.sets(st.integers(0, 2 * n)),  # moments of a commit
        )
    )
)
def test_any_arrival_order_and_bound_gives_the_blob_hash(case: tuple) -> None:  # type: ignore[type-arg]
    """The shell's part, simulated: arrivals in any order (with duplicates), reads back
    up to a limit after each, commits at random moments and once at the end; the
    kept bytes never pass the bound and the digest is the blob's."""
    count, held, arrival, dupes, bound_chunks, commits = case
    chunks = chunks_of(count)
    size = len(chunks[0])
    content = InOrderHash(count, [i for i in range(count) if i not in held], bound_chunks * size)
    coming = [i for i in arrival if i not in held] + [d for d in dupes if d not in held]
    written: set[int] = set()
    readable = set(held)  # what a read back may find: held before, or committed since
    for step, index in enumerate(coming):
        content.add(index, chunks[index])
        written.add(index)
        assert content.kept_bytes <= bound_chunks * size
        if step in commits:
            content.committed()
            readable |= written
        for due in content.reads_due(3):
            assert due in readable, f"chunk {due} read back before it was committed"
            content.add(due, chunks[due])
    content.committed()
    while due_now := content.reads_due(3):
        for index in due_now:
            content.add(index, chunks[index])
    assert content.digest() == whole(chunks)


def test_windowed_order_shuffles_within_windows_only() -> None:
    missing = [i for i in range(300) if i % 7]
    order = windowed_order(missing, 64, random.Random(1))
    assert sorted(order) == missing
    windows = [i // 64 for i in order]
    assert windows == sorted(windows), "window by window"
    assert order != missing, "shuffled inside the windows"


def test_two_fetchers_take_different_chunks_of_each_window() -> None:
    first = windowed_order(range(128), 64, random.Random(1))
    second = windowed_order(range(128), 64, random.Random(2))
    assert len(set(first[:16]) & set(second[:16])) < 8, "their first quarter windows differ"


def test_keep_none_lets_go_of_the_kept_chunks_for_a_read_back() -> None:
    chunks = chunks_of(5)
    content = InOrderHash(5, range(5))
    for index in [3, 1]:
        content.add(index, chunks[index])
    content.keep_none()
    content.add(2, chunks[2])
    assert content.kept_bytes == 0
    content.add(0, chunks[0])
    assert content.frontier == 1 and content.reads_due(5) == [], "not before a commit"
    content.committed()
    assert content.reads_due(5) == [1, 2, 3]
    for index in [1, 2, 3, 4]:
        content.add(index, chunks[index])
    assert content.digest() == whole(chunks)
