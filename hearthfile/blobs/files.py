"""The store's files: where a blob's bytes live, and the blocking I/O on them.

Ring: blobs (layer 1, blocking). ``store.py`` owns every integrity decision and
the index; this module only names files and moves bytes. Layout (DESIGN.md
section 3)::

    <data>/blobs/<aa>/<64 hex>       a complete blob: exactly its bytes
    <data>/partial/<64 hex>          a blob being fetched: full size, chunks at their offsets
    <data>/partial/<64 hex>.manifest its canonical manifest (for a rebuild of the index)
    <data>/partial/incoming-<key>    bytes appended in order (a URL download)
    <data>/tmp/                      adds in progress, batch journals (cleaned at open)
    <data>/corrupt/                  bytes found corrupt, kept for inspection

Direct I/O: where the filesystem allows it, whole chunks move between a reused,
page-aligned buffer and the disk with ``O_DIRECT``, bypassing the page cache.
Putting a chunk into the page cache means the kernel takes fresh pages and
copies into them; where fresh memory is dear (a VM whose host reclaims freed
pages, BENCHMARKS.md) that copy was half of a fetching node's CPU. Chunk
offsets are multiples of 256 KiB, so every full chunk is aligned; a blob's
short last chunk goes through the page cache. A filesystem that refuses
``O_DIRECT`` (tmpfs before Linux 6.6) falls back to buffered I/O, and
``direct_io=False`` (config ``file.direct_io``) asks for that.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import mmap
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import blake3

Buffer = bytes | bytearray | memoryview

#: Direct I/O needs offsets, lengths and memory aligned to the device's logical
#: block; a page satisfies every block device Linux has.
DIRECT_ALIGN: Final = 4096
#: Names of files that hold blob bytes: 64 hex digits.
HEX_LEN: Final = 64


class Layout:
    """Paths of one store's files (plain strings on hot paths: pathlib costs more
    than the write it names)."""

    def __init__(self, data_dir: Path, *, direct_io: bool = True, readonly: bool = False) -> None:
        self.data_dir = data_dir
        self.blobs = data_dir / "blobs"
        self.partials = data_dir / "partial"
        self.tmp = data_dir / "tmp"
        self.corrupt = data_dir / "corrupt"
        self._blobs_s, self._partials_s = str(self.blobs), str(self.partials)
        self._shards: set[str] = set()
        if readonly:  # a reader beside the writer creates nothing (a file that refuses
            self.direct_io = direct_io  # O_DIRECT is then read buffered: BlobFile)
            return
        for path in (self.blobs, self.partials, self.tmp, self.corrupt):
            path.mkdir(parents=True, exist_ok=True)
        self.direct_io = direct_io and direct_io_works(str(self.tmp))

    def complete(self, hexpart: str) -> str:
        return f"{self._blobs_s}/{hexpart[:2]}/{hexpart}"

    def partial(self, hexpart: str) -> str:
        return f"{self._partials_s}/{hexpart}"

    def incoming(self, key: str) -> str:
        return f"{self._partials_s}/incoming-{key}"

    def shard_for(self, hexpart: str) -> str:
        """The directory of a complete blob, made on first use."""
        shard = hexpart[:2]
        path = f"{self._blobs_s}/{shard}"
        if shard not in self._shards:
            os.makedirs(path, exist_ok=True)
            self._shards.add(shard)
        return path

    def complete_names(self) -> Iterator[str]:
        """Every complete blob file's name (a full listing: for rebuilds and ``verify``)."""
        for shard in sorted(os.listdir(self.blobs)):
            if len(shard) == 2 and not shard.startswith("."):
                for name in os.listdir(self.blobs / shard):
                    if len(name) == HEX_LEN and shard == name[:2]:
                        yield name

    def partial_names(self) -> Iterator[str]:
        """Partial blobs that have a manifest beside them."""
        for name in os.listdir(self.partials):
            hexpart = name.removesuffix(".manifest")
            if name != hexpart and len(hexpart) == HEX_LEN:
                yield hexpart

    def keep_corrupt(self, label: str, data: Buffer) -> str:
        """Keep bytes found corrupt for inspection; returns where."""
        dest = f"{self.corrupt}/{label}.{os.getpid()}.{threading.get_ident()}"
        with contextlib.suppress(OSError), open(dest, "wb") as out:
            out.write(data)
        return dest


def fsync_path(path: str, *, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def direct_io_works(directory: str) -> bool:
    """Whether files in ``directory`` take ``O_DIRECT`` (some filesystems refuse it)."""
    if not hasattr(os, "O_DIRECT"):
        return False
    probe = f"{directory}/direct-probe.{os.getpid()}.{threading.get_ident()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o600)
    except OSError:
        return False
    try:
        buf = mmap.mmap(-1, DIRECT_ALIGN)
        try:
            return os.write(fd, memoryview(buf)) == DIRECT_ALIGN
        except OSError:
            return False
        finally:
            buf.close()
    finally:
        os.close(fd)
        os.unlink(probe)


class BlobFile:
    """One blob file open for chunk I/O at offsets: full chunks past the page cache
    when ``direct``, anything unaligned through it. Reads and writes may come from
    several threads at once (``pread``/``pwrite``)."""

    def __init__(self, path: str, *, write: bool, direct: bool, size: int | None = None) -> None:
        self.path = path
        flags = os.O_RDWR | os.O_CREAT if write else os.O_RDONLY
        self._fd = os.open(path, flags, 0o644)
        self._direct_fd: int | None = None
        self._write = write
        if direct and hasattr(os, "O_DIRECT"):
            with contextlib.suppress(OSError):
                self._direct_fd = os.open(path, (os.O_RDWR if write else os.O_RDONLY) | os.O_DIRECT)
        if size is not None and os.fstat(self._fd).st_size != size:
            os.ftruncate(self._fd, size)

    def close(self) -> None:
        for fd in (self._fd, self._direct_fd):
            if fd is not None:
                os.close(fd)
        self._direct_fd = None

    def __enter__(self) -> BlobFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write_at(self, offset: int, data: Buffer) -> None:
        view = memoryview(data).cast("B")
        fd = self._fd
        if self._direct_fd is not None and view.nbytes and not view.nbytes % DIRECT_ALIGN:
            view, fd = aligned_copy(view), self._direct_fd
        while view:
            done = os.pwrite(fd, view, offset)
            view, offset = view[done:], offset + done

    def read_at(self, offset: int, length: int) -> memoryview:
        """Up to ``length + 1`` bytes at ``offset`` (one more shows a file too long),
        as a view of this thread's buffer, valid until its next read or write."""
        want = length + 1
        size = -(-want // DIRECT_ALIGN) * DIRECT_ALIGN
        buf = thread_buffer(size)
        fd = self._direct_fd if self._direct_fd is not None else self._fd
        got = 0
        while got < want:
            more = os.preadv(fd, [buf[got:size]], offset + got)
            got += more
            if not more or (fd == self._direct_fd and got % DIRECT_ALIGN):
                break
        return buf[: min(got, want)]

    def read_into(self, view: memoryview, offset: int) -> int:
        """Fill ``view`` (page-aligned, a multiple of ``DIRECT_ALIGN``) from ``offset``;
        returns the bytes read, short only at the end of the file."""
        fd = self._direct_fd if self._direct_fd is not None else self._fd
        got = 0
        while got < view.nbytes:
            more = os.preadv(fd, [view[got:]], offset + got)
            if not more:
                break
            got += more
        return got

    def sync(self) -> None:
        os.fsync(self._fd)


#: Bytes read per step when hashing a whole file: large enough for BLAKE3's threads
#: to share the work, small enough that the buffer costs nothing to keep.
HASH_PIECE: Final = 4 * 1024 * 1024


def hash_file(path: str, *, direct: bool) -> bytes:
    """BLAKE3 of a file's bytes, read past the page cache when ``direct`` (a file
    just written with direct I/O is not in it, and mapping it would count every
    page in the process's resident memory)."""
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    with BlobFile(path, write=False, direct=direct) as blob_file, Scratch(HASH_PIECE) as view:
        offset = 0
        while True:
            got = blob_file.read_into(view, offset)
            if not got:
                return hasher.digest()
            hasher.update(view[:got])
            offset += got


class Scratch:
    """A page-aligned buffer for the length of a ``with`` block, given back once the
    last view of it is gone (a caller may still hold a slice it was handed)."""

    def __init__(self, size: int) -> None:
        self._buf: mmap.mmap | None = mmap.mmap(-1, size)

    def __enter__(self) -> memoryview:
        assert self._buf is not None
        return memoryview(self._buf)

    def __exit__(self, *exc: object) -> None:
        self._buf = None


class SequentialWriter:
    """Writes one file front to back, past the page cache where it can: pieces
    that are whole multiples of ``DIRECT_ALIGN`` go through an aligned buffer
    with ``O_DIRECT``; from the first piece that is not (a blob's tail, a
    range's ends), the file is written buffered."""

    def __init__(self, fd: int, *, direct: bool) -> None:
        self._fd = fd
        self._direct = direct and _set_direct(fd, True)

    def write(self, data: Buffer) -> None:
        view = memoryview(data).cast("B")
        if self._direct and view.nbytes % DIRECT_ALIGN:
            self._direct = _set_direct(self._fd, False)
        if self._direct and not is_aligned(view):
            view = aligned_copy(view)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            if not (self._direct and exc.errno == errno.EINVAL):
                raise
            # The filesystem took the flag but not the write: go on buffered.
            self._direct = _set_direct(self._fd, False)
            self.write(view)


_local = threading.local()


def thread_buffer(size: int) -> memoryview:
    """This thread's page-aligned buffer, at least ``size`` bytes, kept for reuse: a
    view of it is valid until the thread's next direct read or write."""
    buf: mmap.mmap | None = getattr(_local, "buf", None)
    if buf is None or len(buf) < size:
        buf = _local.buf = mmap.mmap(-1, -(-size // DIRECT_ALIGN) * DIRECT_ALIGN)
    return memoryview(buf)


def is_aligned(view: memoryview) -> bool:
    """Whether direct I/O can take ``view``'s memory as it is (a page-aligned buffer
    the caller filled, such as an ``mmap``), with no copy."""
    if view.readonly or not view.nbytes:
        return False
    return ctypes.addressof(ctypes.c_char.from_buffer(view)) % DIRECT_ALIGN == 0


def aligned_copy(view: memoryview) -> memoryview:
    aligned = thread_buffer(view.nbytes)[: view.nbytes]
    aligned[:] = view
    return aligned


def _set_direct(fd: int, on: bool) -> bool:
    """Turn ``O_DIRECT`` on or off for an open file; returns whether it is on."""
    if not hasattr(os, "O_DIRECT"):
        return False
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT if on else flags & ~os.O_DIRECT)
    except OSError:
        return False
    return on
