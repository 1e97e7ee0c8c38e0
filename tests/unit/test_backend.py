"""LocalBackend: buffered and direct I/O keep the same bytes; direct I/O bypasses the
page cache where the filesystem allows it, and falls back where it does not."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
from pathlib import Path

import pytest

from hearthfile.blobs import backend as backend_module
from hearthfile.blobs.backend import (
    DIRECT_ALIGN,
    LocalBackend,
    SequentialWriter,
    _direct_io_works,
)

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


@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize("size", SIZES)
def test_bytes_round_trip(tmp_path: Path, direct: bool, size: int) -> None:
    backend = LocalBackend(tmp_path, direct_io=direct)
    data = os.urandom(size)
    backend.add("ab" + "0" * 62, data, "t")
    assert bytes(backend.load("ab" + "0" * 62, size + 1)) == data
    assert bytes(backend.load("ab" + "0" * 62, size)) == data
    assert backend.load("ab" + "0" * 62, max(size - 1, 0)).nbytes == max(size - 1, 0)
    assert not list(backend.tmp.iterdir())  # the probe and the temp file are gone


def test_a_longer_file_shows_in_a_load_of_one_byte_more(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    name = "cd" + "1" * 62
    backend.add(name, bytes(DIRECT_ALIGN * 2), "t")
    with open(backend.path(name), "ab") as f:
        f.write(b"x")  # tampered with on disk
    assert backend.load(name, DIRECT_ALIGN * 2 + 1).nbytes == DIRECT_ALIGN * 2 + 1


def test_load_of_a_missing_name_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        LocalBackend(tmp_path).load("ef" + "2" * 62, 10)


def test_direct_writes_leave_the_page_cache_alone(tmp_path: Path) -> None:
    if not _direct_io_works(str(tmp_path)):
        pytest.skip(f"{tmp_path} does not take O_DIRECT")
    name = "aa" + "3" * 62
    direct, buffered = LocalBackend(tmp_path / "d"), LocalBackend(tmp_path / "b", direct_io=False)
    assert direct.direct_io and not buffered.direct_io
    for backend in (direct, buffered):
        backend.add(name, os.urandom(256 * 1024), "t")
        backend.load(name, 256 * 1024 + 1)
    assert _resident_pages(direct.path(name)) == 0
    assert _resident_pages(buffered.path(name)) == 256 * 1024 // mmap.PAGESIZE


def test_a_filesystem_without_direct_io_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def refusing_open(path: str, flags: int, *args: int) -> int:
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument")  # as tmpfs before Linux 6.6
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refusing_open)
    backend = LocalBackend(tmp_path)
    assert not backend.direct_io
    data = os.urandom(256 * 1024)
    backend.add("bb" + "4" * 62, data, "t")
    assert bytes(backend.load("bb" + "4" * 62, len(data) + 1)) == data


def test_a_removed_file_is_emptied_and_its_inode_reused(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    old, new = "ab" + "5" * 62, "cd" + "6" * 62
    backend.add(old, os.urandom(256 * 1024), "t")
    inode = backend.path(old).stat().st_ino
    backend.remove(old)
    assert not backend.path(old).exists()
    [spare] = backend.spare.iterdir()
    assert spare.stat().st_size == 0  # the space is freed at once
    assert old not in set(backend.names())
    data = os.urandom(3000)
    backend.add(new, data, "t")
    assert backend.path(new).stat().st_ino == inode
    assert bytes(backend.load(new, len(data) + 1)) == data
    assert not list(backend.spare.iterdir()) and not list(backend.tmp.iterdir())


def test_spares_survive_a_restart_and_are_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backend_module, "MAX_SPARES", 2)
    backend = LocalBackend(tmp_path)
    names = [f"{i:02x}" + "7" * 62 for i in range(3)]
    for name in names:
        backend.add(name, b"x" * 10, "t")
    for name in names:
        backend.remove(name)
    assert len(list(backend.spare.iterdir())) == 2  # the third was unlinked
    backend.remove(names[0])  # already gone: fine
    again = LocalBackend(tmp_path)
    inodes = {p.stat().st_ino for p in again.spare.iterdir()}
    for name in names[:2]:
        again.add(name, b"y" * 10, "t")
    assert {again.path(n).stat().st_ino for n in names[:2]} == inodes


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
    if not _direct_io_works(str(tmp_path)):
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
