"""Writes to the store in batches, and the journal that makes them crash-safe.

Ring: blobs (layer 1, blocking). Owns ``WriteBatch`` and the batch journal
(``blobs/.tmp/<batch>.journal``); ``store.py`` makes batches and undoes what a
crashed one left (``BlobStore._recover``).

Each file goes to a temporary name and is renamed into place; names are noted in
the batch's journal before the rename; at commit one ``syncfs`` makes every file
durable, then one SQLite transaction makes them visible. So a file is in the
index only once its bytes are on disk, and a crash anywhere leaves either the old
index or the new one. Deletions use the same journal.

A batch works on its store's index lock, transaction and count of chunks being
written (``BlobStore._mutex``, ``_tx``, ``_writing``): they are the store's own
state, shared with its deletions and GC.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Final

from hearthfile.blobs.backend import Buffer, LocalBackend
from hearthfile.blobs.chunker import BlobError, Manifest, verify_chunk
from hearthfile.blobs.index import index_manifest
from hearthfile.cids import Cid, cid_of, hex_of

if TYPE_CHECKING:
    from hearthfile.blobs.store import BlobStore

MANIFEST_SUFFIX: Final = ".manifest"


class Journal:
    """Names a batch may leave on disk, written before the file is renamed into place."""

    def __init__(self, data_dir: Path, batch_id: str) -> None:
        self.path = data_dir / "blobs" / LocalBackend.TMP_DIR / f"{batch_id}.journal"
        self._fd: int | None = None

    def note_all(self, names: Iterable[str]) -> None:
        text = "".join(f"{n}\n" for n in names)
        if not text:
            return
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(self._fd, text.encode())

    def discard(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self.path.unlink(missing_ok=True)


class WriteBatch:
    """Writes that become durable and visible together, at ``commit``.

    Files land under their final names as they are written (so memory stays
    small) but the index learns of them only after one flush at commit. An
    exception inside the ``with`` block aborts: files this batch wrote that the
    index does not reference are removed.
    """

    def __init__(self, store: BlobStore, batch_id: str) -> None:
        self._store = store
        #: Bytes written so far; callers may commit and start a new batch past a bound.
        self.bytes_written = 0
        self._id = batch_id
        self._journal = Journal(store.data_dir, batch_id)
        #: Chunks written (or found held) by this batch, indexed at commit.
        self._chunks: dict[Cid, int] = {}
        #: Chunks this batch counts in the store's ``_writing`` until it ends.
        self._claimed: set[Cid] = set()
        self._manifests: list[tuple[Manifest, bool, int, bool]] = []
        self._written: list[str] = []

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

    def write_chunk(self, cid: Cid, data: Buffer) -> None:
        verify_chunk(data, cid)
        self.write_verified_chunk(cid, data)

    def write_verified_chunk(self, cid: Cid, data: Buffer) -> None:
        """Store a chunk whose CID the caller has just computed from ``data``."""
        self.write_verified_chunks([(cid, data)])

    def write_verified_chunks(self, chunks: Sequence[tuple[Cid, Buffer]]) -> None:
        """Store chunks whose CIDs the caller has just computed from their bytes, with
        one index lookup and one journal write for them all."""
        fresh: dict[Cid, Buffer] = {}
        for cid, data in chunks:
            if cid not in self._claimed:
                self._claimed.add(cid)
                fresh[cid] = data
        if not fresh:
            return
        store = self._store
        with store._mutex:
            store._writing.update(fresh.keys())
        present = store.present_chunks(fresh)
        todo = [(cid, data) for cid, data in fresh.items() if cid not in present]
        self._chunks.update((cid, len(fresh[cid])) for cid in present)
        self._journal.note_all(hex_of(cid) for cid, _ in todo)
        for cid, data in todo:
            self._write_noted(hex_of(cid), data)
            # Indexed at commit only once written: a write that fails (a full disk)
            # leaves no index row naming a file that is not there (issue 13 item 8).
            self._chunks[cid] = len(data)

    def write_manifest(self, manifest: Manifest, *, pin: bool, proven: bool = False) -> None:
        """Record ``manifest``. With ``proven`` (the caller built it from, or checked
        it against, the bytes this batch writes) the blob becomes complete at commit
        when every chunk is held; otherwise only ``complete_blob`` makes it so."""
        encoded = manifest.encode()
        self._write_file(hex_of(cid_of(encoded)) + MANIFEST_SUFFIX, encoded)
        self._manifests.append((manifest, pin, len(encoded), proven))

    def _write_file(self, name: str, data: Buffer) -> None:
        self._journal.note_all([name])
        self._write_noted(name, data)

    def _write_noted(self, name: str, data: Buffer) -> None:
        self._written.append(name)
        self.bytes_written += len(data)
        try:
            self._store.backend.add(name, data, self._id)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise BlobError("disk_full", f"no space left writing {name}") from None
            raise BlobError("io_error", f"writing {name}: {exc.strerror}") from None

    def commit(self) -> None:
        store = self._store
        try:
            if self._written:
                store.backend.flush()
            now = store._clock()
            with store._tx() as db:
                db.executemany(
                    "INSERT OR IGNORE INTO chunks (cid, size) VALUES (?, ?)", self._chunks.items()
                )
                for manifest, pin, encoded_len, proven in self._manifests:
                    index_manifest(db, manifest, pin, encoded_len, now, proven)
        except OSError as exc:
            self.abort()
            code = "disk_full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "io_error"
            raise BlobError(code, f"committing writes: {exc.strerror}") from None
        except sqlite3.OperationalError as exc:  # the index could not grow: a full disk
            self.abort()
            code = "disk_full" if "full" in str(exc) else "io_error"
            raise BlobError(code, f"committing to the index: {exc}") from None
        except BaseException:
            self.abort()
            raise
        self._release()

    def abort(self) -> None:
        store = self._store
        for name in self._written:
            hexpart = name.removesuffix(MANIFEST_SUFFIX)
            shared = name == hexpart and store._writing["blake3:" + hexpart] > 1
            if not shared and not store._referenced(name):
                store.backend.remove(name)
        self._release()

    def _release(self) -> None:
        store = self._store
        with store._mutex:
            for cid in self._claimed:
                store._writing[cid] -= 1
                if store._writing[cid] <= 0:
                    del store._writing[cid]
        self._claimed.clear()
        self._chunks.clear()
        self._written.clear()
        self._journal.discard()
