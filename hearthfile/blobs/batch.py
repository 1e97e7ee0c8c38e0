"""Writes to the store in batches, and the journal that makes them crash-safe.

Ring: blobs (layer 1, blocking). Owns ``WriteBatch`` and the batch journal
(``tmp/<batch>.journal``); ``store.py`` makes batches, and ``recovery.py``
undoes what a crashed one left when the store opens.

A batch writes bytes first and makes them visible last. Chunks of a partial
blob go to their offsets in its file; a blob added whole goes to a temporary
file and is renamed to its final name, which is noted in the journal first;
a small blob's bytes go to the pack (``pack.py``). At commit the files written
are flushed (``fsync``, and their directories), the pack commits, and then one
SQLite transaction makes it all visible. So nothing is in the index before its
bytes are on disk, and a crash anywhere leaves the old index or the new one;
opening removes what a crashed batch's journal names and the index does not.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from hearthfile.blobs.chunker import CHUNK_SIZE, BlobError, Manifest, verify_chunk
from hearthfile.blobs.files import BlobFile, Buffer, fsync_path
from hearthfile.blobs.pack import INLINE_MAX
from hearthfile.cids import Cid, hex_of

if TYPE_CHECKING:
    from hearthfile.blobs.store import BlobStore


class Journal:
    """Names a batch may leave on disk, written before they exist: ``c:<hex>`` a
    complete blob file, ``p:<hex>`` a partial one, ``s:<hex>`` a pack row."""

    def __init__(self, tmp: Path, batch_id: str) -> None:
        self.path = tmp / f"{batch_id}.journal"
        self._fd: int | None = None

    def note_all(self, names: Iterable[str]) -> None:
        text = "".join(f"{n}\n" for n in names)
        if not text:
            return
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.write(self._fd, text.encode())
        except OSError as exc:
            raise io_error("writing the batch journal", exc) from None

    def discard(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self.path.unlink(missing_ok=True)


def io_error(doing: str, exc: OSError) -> BlobError:
    """A store error for a failed system call: ``disk_full`` or ``io_error``."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return BlobError("disk_full", f"no space left {doing}")
    return BlobError("io_error", f"{doing}: {exc.strerror or exc}")


#: A complete blob to index at commit: its manifest, pin, and how it came.
_NewBlob = tuple[Manifest, bool, str]


class WriteBatch:
    """Writes that become durable and visible together, at ``commit``.

    An exception inside the ``with`` block aborts: files this batch placed that
    the index does not reference are removed; chunks written into a partial
    file stay unreferenced (the have-map does not name them) until rewritten.
    """

    def __init__(self, store: BlobStore, batch_id: str) -> None:
        self._store = store
        #: Bytes written so far; callers may commit and start a new batch past a bound.
        self.bytes_written = 0
        self._id = batch_id
        self._journal = Journal(store.layout.tmp, batch_id)
        self._files: dict[Cid, BlobFile] = {}
        self._have: list[tuple[Cid, int]] = []
        self._small: dict[Cid, bytes] = {}
        self._loose: dict[Cid, bytes] = {}
        self._new: list[_NewBlob] = []
        self._placed: dict[Cid, str] = {}
        self._dirs: set[str] = set()
        self._tmp_count = 0

    def __enter__(self) -> WriteBatch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    # -- writing -----------------------------------------------------------------

    def write_chunks(self, manifest: Manifest, chunks: Sequence[tuple[int, Buffer]]) -> None:
        """Chunks of a partial blob (``BlobStore.begin_blob``), each already checked
        by the caller against the manifest (``check_chunk``)."""
        for index, data in chunks:
            self._write_at(manifest.cid, manifest.size, index, data)

    def _write_at(self, cid: Cid, size: int, index: int, data: Buffer) -> None:
        if size <= INLINE_MAX:
            self._small[cid] = bytes(data)
        else:
            blob_file = self._files.get(cid)
            if blob_file is None:
                blob_file = self._files[cid] = self._store.open_partial(cid, size)
            try:
                blob_file.write_at(index * CHUNK_SIZE, data)
            except OSError as exc:
                raise io_error(f"writing chunk {index} of {cid}", exc) from None
            self._store.mirrored(cid, index, data)
        self._have.append((cid, index))
        self.bytes_written += len(data)

    def write_chunk(self, cid: Cid, data: Buffer) -> None:
        """A chunk by its CID alone, verified: it goes into every partial blob that
        lacks it, or, when none does, is kept loose (an HTTP upload ahead of its
        manifest) until a blob takes it or GC drops it."""
        verify_chunk(data, cid)
        places = self._store.wanting(cid)
        for blob, size, index in places:
            self._write_at(blob, size, index, data)
        if not places and not self._store.present_chunks([cid]):
            self._loose[cid] = bytes(data)
            self.bytes_written += len(data)

    def temp_path(self) -> str:
        """A fresh temporary file name for a blob being added (``place`` it after)."""
        self._tmp_count += 1
        return f"{self._store.layout.tmp}/{self._id}.{self._tmp_count}"

    def add_small(self, manifest: Manifest, data: bytes, *, pin: bool, origin: str) -> None:
        """A whole small blob (at most ``INLINE_MAX`` bytes), checked by the caller."""
        self._small[manifest.cid] = data
        self._new.append((manifest, pin, origin))
        self.bytes_written += len(data)

    def place(self, tmp: str, manifest: Manifest, *, pin: bool, origin: str) -> None:
        """Make the temporary file ``tmp``, whose bytes ``manifest`` was built from,
        the blob's file (visible at commit)."""
        cid = manifest.cid
        store = self._store
        self._new.append((manifest, pin, origin))
        if cid in self._placed or store.has_blob(cid):
            os.unlink(tmp)  # held already: only its name and pin are news
            return
        hexpart = hex_of(cid)
        self._journal.note_all([f"c:{hexpart}"])
        store.claim(cid)
        self._placed[cid] = store.layout.complete(hexpart)
        try:
            self._dirs.add(store.layout.shard_for(hexpart))
            os.rename(tmp, self._placed[cid])
        except OSError as exc:
            raise io_error(f"placing {cid}", exc) from None
        self.bytes_written += manifest.size

    # -- ending ------------------------------------------------------------------

    def commit(self) -> None:
        store = self._store
        try:
            for blob_file in self._files.values():
                blob_file.sync()
            for path in self._placed.values():
                fsync_path(path)
            for directory in self._dirs:
                fsync_path(directory, directory=True)
            if self._small:  # noted first, as every name a batch may leave
                self._journal.note_all(f"s:{hex_of(cid)}" for cid in self._small)
                store.pack.put_many(self._small.items())
            with store.tx() as db:
                store.index_new(db, self._new)
                db.executemany(
                    "INSERT OR IGNORE INTO have (blob, idx) SELECT ?1, ?2 WHERE EXISTS "
                    "(SELECT 1 FROM blobs WHERE cid = ?1 AND complete = 0)",
                    self._have,
                )
                db.executemany(
                    "INSERT OR IGNORE INTO loose (cid, data, added_at) VALUES (?, ?, ?)",
                    ((c, d, store.now()) for c, d in self._loose.items()),
                )
        except OSError as exc:
            self.abort()
            raise io_error("committing writes", exc) from None
        except sqlite3.Error as exc:  # the index could not grow: a full disk
            self.abort()
            code = "disk_full" if "full" in str(exc) else "io_error"
            raise BlobError(code, f"committing to the index: {exc}") from None
        except BaseException:
            self.abort()
            raise
        store.drop_replaced_partials(m.cid for m, _, _ in self._new if m.size > INLINE_MAX)
        self._release()

    def abort(self) -> None:
        store = self._store
        for cid, path in self._placed.items():
            if store.writers(cid) <= 1 and not store.has_blob(cid):
                with _quiet():
                    os.unlink(path)
        orphans = [c for c, _, _ in ((m.cid, p, o) for m, p, o in self._new) if c in self._small]
        stray = [c for c in orphans if not store.has_blob(c)]
        if stray:
            with _quiet():
                store.pack.delete_many(stray)
        self._release()

    def _release(self) -> None:
        for blob_file in self._files.values():
            blob_file.close()
        for cid in self._placed:
            self._store.release(cid)
        self._files.clear()
        self._placed.clear()
        self._have.clear()
        self._small.clear()
        self._loose.clear()
        self._new.clear()
        self._journal.discard()


class _quiet:
    """Suppress what cleaning up after a failure may itself fail with."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> bool:
        return exc_type is not None and issubclass(exc_type, (OSError, sqlite3.Error))
