"""Blob files: buffered and direct I/O keep the same bytes; direct I/O bypasses the
page cache where the filesystem allows it, and falls back where it does not."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
from pathlib import Path

import pytest

from hearthfile.blobs.files import DIRECT_ALIGN, BlobFile, SequentialWriter, direct_io_works

SIZES = [0, 1, 1000, DIRECT_ALIGN, 3 * DIRECT_ALIGN + 17, 256 * 1024]


def _resident_pages(path: Path) -> int:
    """How many of the file's pages are in the page cache (mmap + mincore)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    size = path.stat().st_size
    pages = (ctypes.c_ubyte * -(-size // mmap.PAGESIZE))()
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        try:
            assert libc.mincore(addr, size, pages) == 0, os.strerror(ctypes.get_errno())
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)
    return sum(b & 1 for b in pages)


CS = 256 * 1024


@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize("size", SIZES)
def test_bytes_round_trip_at_chunk_offsets(tmp_path: Path, direct: bool, size: int) -> None:
    path = str(tmp_path / "blob")
    data = os.urandom(size)
    with BlobFile(path, write=True, direct=direct, size=CS + size) as f:
        f.write_at(CS, data)
    with BlobFile(path, write=False, direct=direct) as f:
        assert bytes(f.read_at(CS, size)) == data  # the end of the file: no byte more
        assert f.read_at(0, CS).nbytes == CS + min(size, 1)  # one more shows what follows
    assert os.path.getsize(path) == CS + size


def test_a_longer_file_shows_in_a_read_of_one_byte_more(tmp_path: Path) -> None:
    path = str(tmp_path / "blob")
    with BlobFile(path, write=True, direct=True, size=2 * DIRECT_ALIGN) as f:
        f.write_at(0, bytes(2 * DIRECT_ALIGN))
    with open(path, "ab") as out:
        out.write(b"x")  # tampered with on disk
    with BlobFile(path, write=False, direct=True) as f:
        assert f.read_at(0, 2 * DIRECT_ALIGN).nbytes == 2 * DIRECT_ALIGN + 1


def test_opening_a_missing_file_for_reading_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        BlobFile(str(tmp_path / "nope"), write=False, direct=True)


def test_direct_writes_leave_the_page_cache_alone(tmp_path: Path) -> None:
    if not direct_io_works(str(tmp_path)):
        pytest.skip(f"{tmp_path} does not take O_DIRECT")
    for name, direct in (("d", True), ("b", False)):
        with BlobFile(str(tmp_path / name), write=True, direct=direct, size=CS) as f:
            f.write_at(0, os.urandom(CS))
            f.read_at(0, CS)
    assert _resident_pages(tmp_path / "d") == 0
    assert _resident_pages(tmp_path / "b") == CS // mmap.PAGESIZE


def test_a_filesystem_without_direct_io_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def refusing_open(path: str, flags: int, *args: int) -> int:
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument")  # as tmpfs before Linux 6.6
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refusing_open)
    assert not direct_io_works(str(tmp_path))
    data = os.urandom(CS)
    with BlobFile(str(tmp_path / "blob"), write=True, direct=True, size=CS) as f:
        f.write_at(0, data)
        assert bytes(f.read_at(0, CS)) == data


@pytest.mark.parametrize("direct", [True, False])
def test_sequential_writer_keeps_every_byte_in_order(tmp_path: Path, direct: bool) -> None:
    pieces = [os.urandom(256 * 1024), os.urandom(DIRECT_ALIGN), os.urandom(1000), b"", b"z"]
    path = tmp_path / "out"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        writer = SequentialWriter(fd, direct=direct)
        for piece in pieces:
            writer.write(piece)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"".join(pieces)


def test_sequential_writer_passes_whole_chunks_past_the_page_cache(tmp_path: Path) -> None:
    if not direct_io_works(str(tmp_path)):
        pytest.skip(f"{tmp_path} does not take O_DIRECT")
    path = tmp_path / "out"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        writer = SequentialWriter(fd, direct=True)
        writer.write(os.urandom(256 * 1024))
        writer.write(os.urandom(100))  # a tail: buffered from here on
    finally:
        os.close(fd)
    assert _resident_pages(path) <= 1  # at most the tail's page
