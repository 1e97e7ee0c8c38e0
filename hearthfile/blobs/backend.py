"""Where chunk and manifest bytes live: a small backend seam (blocking file I/O).

The store (``store.py``) owns the index and every integrity decision; a backend
only keeps named byte strings. The interface has the shape of a checksum-keyed
file store: add, open a stream, a local path when there is one, remove; plus
``flush`` to make every add so far durable at once, which is what lets a 1 GiB
add cost one flush instead of 4,096 fsyncs. An object-storage backend can
implement the same five calls later without touching callers.

``LocalBackend`` shards names by their first two hex digits:
``<root>/<aa>/<rest>``. Every add writes a temporary file under ``<root>/.tmp``
(same filesystem) and renames it into place, so a reader never sees half a file.

Direct I/O: where the filesystem allows it, whole chunks move between a reused,
page-aligned buffer and the disk with ``O_DIRECT``, bypassing the page cache.
Putting a chunk into the page cache means the kernel takes fresh pages and
copies into them; where fresh memory is dear (a VM whose host reclaims freed
pages, BENCHMARKS.md) that copy was half of a fetching node's CPU, and a store
that takes in gigabytes should not push a machine's working set out of its
cache anyway. Lengths that are not a multiple of ``DIRECT_ALIGN`` (the last
chunk of a blob, small blobs, manifests) use ordinary buffered I/O. A
filesystem that refuses ``O_DIRECT`` (tmpfs before Linux 6.6) falls back to buffered I/O
everywhere, and ``direct_io=False`` (config ``file.direct_io``) asks for that.

Spare files: a removed file is renamed into ``<root>/.spare`` and truncated to
nothing (its space is freed), and the next add writes into it instead of
creating a file. Creating a file means allocating an inode, and ext4 without a
journal skips over every inode freed in the last seconds, reading each one's
table block: after a GC or an ``rm`` of a large blob, that scan was a fifth of
a fetching node's CPU. Reusing the inode skips the allocation altogether. At
most ``MAX_SPARES`` are kept; a spare is never read as a chunk, and a crash
leaves at worst a spare with stale bytes, which the next add truncates.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import itertools
import mmap
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

Buffer = bytes | bytearray | memoryview


#: Emptied files kept for reuse: enough for a few GiB of chunks removed at once.
MAX_SPARES = 16384

#: Direct I/O needs offsets, lengths and memory aligned to the device's logical
#: block; a page satisfies every block device Linux has.
DIRECT_ALIGN = 4096


class ChunkBackend(Protocol):
    def add(self, name: str, data: Buffer, tmp_prefix: str) -> None:
        """Store ``data`` under ``name`` atomically (durable after ``flush``)."""
        ...

    def load(self, name: str, limit: int) -> memoryview:
        """Up to ``limit`` bytes of ``name``; FileNotFoundError when absent. The view
        may share a buffer with the next ``load`` or ``add`` on the same thread:
        copy to keep."""
        ...

    def open_stream(self, name: str) -> BinaryIO:
        """Open ``name`` for reading; FileNotFoundError when absent."""
        ...

    def local_path(self, name: str) -> Path | None:
        """A filesystem path holding the bytes, when the backend has one."""
        ...

    def remove(self, name: str) -> None:
        """Delete ``name``; absent is fine."""
        ...

    def flush(self) -> None:
        """Make every ``add`` and ``remove`` so far durable."""
        ...

    def move_aside(self, name: str, reason: str) -> str:
        """Take a corrupt file out of service, keeping it for inspection; returns where."""
        ...

    def names(self) -> Iterator[str]:
        """Every stored name (a full listing: for ``verify`` only)."""
        ...


def _load_syncfs() -> Callable[[int], int] | None:
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return None
    try:
        fn = ctypes.CDLL(libc_name, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_SYNCFS = _load_syncfs()


class LocalBackend:
    TMP_DIR = ".tmp"
    ASIDE_DIR = ".corrupt"
    SPARE_DIR = ".spare"

    def __init__(self, root: Path, *, direct_io: bool = True) -> None:
        self.root = root
        self.tmp = root / self.TMP_DIR
        self.aside = root / self.ASIDE_DIR
        self.spare = root / self.SPARE_DIR
        for path in (root, self.tmp, self.aside, self.spare):
            path.mkdir(parents=True, exist_ok=True)
        self._shards: set[str] = set()
        self._counter = itertools.count()
        # Plain strings on the hot paths: pathlib costs more than the write it names.
        self._root_s, self._tmp_s, self._spare_s = str(root), str(self.tmp), str(self.spare)
        self._spares = [f"{self._spare_s}/{n}" for n in os.listdir(self.spare)]
        self.direct_io = direct_io and _direct_io_works(self._tmp_s)

    def path(self, name: str) -> Path:
        return Path(self._file(name))

    def _file(self, name: str) -> str:
        return f"{self._root_s}/{name[:2]}/{name[2:]}"

    def add(self, name: str, data: Buffer, tmp_prefix: str) -> None:
        shard = name[:2]
        if shard not in self._shards:
            (self.root / shard).mkdir(exist_ok=True)
            self._shards.add(shard)
        try:
            tmp = self._spares.pop()  # atomic: threads may add at once
        except IndexError:
            tmp = f"{self._tmp_s}/{tmp_prefix}.{next(self._counter)}"
        view = memoryview(data).cast("B")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        if self.direct_io and view.nbytes and not view.nbytes % DIRECT_ALIGN:
            view, flags = _aligned_copy(view), flags | os.O_DIRECT
        fd = os.open(tmp, flags, 0o644)
        try:
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        os.close(fd)
        os.replace(tmp, self._file(name))

    def open_stream(self, name: str) -> BinaryIO:
        return open(self._file(name), "rb", buffering=0)

    def load(self, name: str, limit: int) -> memoryview:
        size = -(-limit // DIRECT_ALIGN) * DIRECT_ALIGN
        buf = _thread_buffer(size)
        flags = os.O_RDONLY | (os.O_DIRECT if self.direct_io else 0)
        fd = os.open(self._file(name), flags)
        got = 0
        try:
            while got < limit:
                more = os.readv(fd, [buf[got:size]])
                got += more
                # Direct reads come back short only at the end of the file.
                if not more or (self.direct_io and got % DIRECT_ALIGN):
                    break
        finally:
            os.close(fd)
        return buf[: min(got, limit)]

    def local_path(self, name: str) -> Path | None:
        return self.path(name)

    def remove(self, name: str) -> None:
        path = self._file(name)
        if len(self._spares) >= MAX_SPARES:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
        spare = f"{self._spare_s}/{os.getpid()}.{next(self._counter)}"
        try:
            os.rename(path, spare)
        except FileNotFoundError:
            return
        os.truncate(spare, 0)
        self._spares.append(spare)

    def flush(self) -> None:
        """One syncfs for the whole filesystem instead of an fsync per file."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if _SYNCFS is None:
                os.sync()
            elif _SYNCFS(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err) or errno.errorcode.get(err, "syncfs failed"))
        finally:
            os.close(fd)

    def move_aside(self, name: str, reason: str) -> str:
        dest = self.aside / f"{name}.{reason}.{os.getpid()}.{next(self._counter)}"
        try:
            os.replace(self.path(name), dest)
        except FileNotFoundError:
            return ""
        return str(dest)

    def names(self) -> Iterator[str]:
        for shard in sorted(os.listdir(self.root)):
            if len(shard) != 2 or shard.startswith("."):
                continue
            for rest in os.listdir(self.root / shard):
                yield shard + rest

    def clear_tmp(self, prefix: str) -> None:
        for entry in self.tmp.glob(f"{prefix}*"):
            entry.unlink(missing_ok=True)


def _direct_io_works(directory: str) -> bool:
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


class SequentialWriter:
    """Writes one file front to back, past the page cache where it can: pieces
    that are whole multiples of ``DIRECT_ALIGN`` go through an aligned buffer
    with ``O_DIRECT``; from the first piece that is not (a blob's tail, a
    range's ends), the file is written buffered. For ``get -o FILE``."""

    def __init__(self, fd: int, *, direct: bool) -> None:
        self._fd = fd
        self._direct = direct and _set_direct(fd, True)

    def write(self, data: Buffer) -> None:
        view = memoryview(data).cast("B")
        if self._direct and view.nbytes % DIRECT_ALIGN:
            self._direct = _set_direct(self._fd, False)
        if self._direct:
            view = _aligned_copy(view)
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


def _thread_buffer(size: int) -> memoryview:
    """This thread's page-aligned buffer, at least ``size`` bytes, kept for reuse: a
    view of it is valid until the thread's next direct load, add or write."""
    buf: mmap.mmap | None = getattr(_local, "buf", None)
    if buf is None or len(buf) < size:
        buf = _local.buf = mmap.mmap(-1, -(-size // DIRECT_ALIGN) * DIRECT_ALIGN)
    return memoryview(buf)


def _aligned_copy(view: memoryview) -> memoryview:
    aligned = _thread_buffer(view.nbytes)[: view.nbytes]
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
