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
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

Buffer = bytes | bytearray | memoryview


class ChunkBackend(Protocol):
    def add(self, name: str, data: Buffer, tmp_prefix: str) -> None:
        """Store ``data`` under ``name`` atomically (durable after ``flush``)."""
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

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / self.TMP_DIR
        self.aside = root / self.ASIDE_DIR
        for path in (root, self.tmp, self.aside):
            path.mkdir(parents=True, exist_ok=True)
        self._shards: set[str] = set()
        self._counter = itertools.count()
        # Plain strings on the hot paths: pathlib costs more than the write it names.
        self._root_s, self._tmp_s = str(root), str(self.tmp)

    def path(self, name: str) -> Path:
        return Path(self._file(name))

    def _file(self, name: str) -> str:
        return f"{self._root_s}/{name[:2]}/{name[2:]}"

    def add(self, name: str, data: Buffer, tmp_prefix: str) -> None:
        shard = name[:2]
        if shard not in self._shards:
            (self.root / shard).mkdir(exist_ok=True)
            self._shards.add(shard)
        tmp = f"{self._tmp_s}/{tmp_prefix}.{next(self._counter)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
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

    def local_path(self, name: str) -> Path | None:
        return self.path(name)

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._file(name))

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
