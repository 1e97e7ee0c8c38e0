"""BlobStore: one file per blob, indexed in SQLite (store layout version 2).

Ring: blobs (layer 1, blocking). Owns the writer lock and the public API callers
use (has/read/write/pin/remove/gc/verify). Its parts: ``files.py`` (where bytes
live, direct I/O), ``index.py`` (the SQLite schema, versions and migrations),
``pack.py`` (small blobs), ``batch.py`` (``WriteBatch`` and its journal),
``recovery.py`` (what opening puts right: crashed batches, interrupted
completions, a lost index), ``gc.py`` (eviction planning), ``convert.py`` (a
version 1 store becomes version 2).

A complete blob is one file holding exactly its bytes (or, up to
``INLINE_MAX``, a row of the pack). A blob being fetched is a partial file of
its full size, chunks written at their offsets, with a have-map in the index;
it becomes complete only after the BLAKE3 of its whole bytes matched the
manifest's ``content`` (DESIGN.md section 5), when its file is renamed into
place. Chunk CIDs are served from whichever blob holds them (the chunk-location
index), and a new blob takes chunks already held by copying them locally.

Integrity. Every write is checked against its CID before it lands, and every
read re-hashes what it read. Bytes found corrupt are kept in ``corrupt/``,
the blob holding them becomes partial (its other chunks kept), and a later
fetch repairs it; nothing corrupt is served.

Threads. One process owns the store (``store.lock``); inside it the store may
be called from several worker threads: the index is guarded by one lock.
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
import sqlite3
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, Final

import blake3

from hearthfile.blobs.batch import Journal, WriteBatch, io_error
from hearthfile.blobs.chunker import (
    CHUNK_SIZE,
    BlobError,
    Manifest,
    ManifestBuilder,
    check_chunk,
    check_manifest,
    iter_chunks,
)
from hearthfile.blobs.files import (
    HASH_PIECE,
    BlobFile,
    Buffer,
    Layout,
    Scratch,
    SequentialWriter,
    fsync_path,
    hash_file,
)
from hearthfile.blobs.gc import GC_TARGET, GC_THRESHOLD, GcReport, bytes_to_free, pick_victims
from hearthfile.blobs.index import (
    INDEX_NAME,
    fresh_index,
    index_blob,
    index_blobs,
    open_index,
    quick_check,
)
from hearthfile.blobs.pack import INLINE_MAX, PACK_NAME, Pack
from hearthfile.blobs.recovery import adopt, check_index, recover
from hearthfile.cids import Cid, cid_from_digest, cid_of, hex_of
from hearthfile.errors import HearthError

log = logging.getLogger(__name__)

#: How a blob came to the store (DESIGN.md section 3).
ORIGINS: Final = frozenset({"added", "fetched", "pushed", "downloaded"})
#: Chunks uploaded ahead of their manifest are kept this long for a commit to take them.
LOOSE_TTL_S: Final = 3600.0


class StoreLocked(HearthError):
    """Another process is writing this store."""


class PinnedError(HearthError):
    """The operation would remove a pinned blob."""


@dataclass(frozen=True, slots=True)
class BlobInfo:
    cid: Cid
    size: int
    chunk_count: int
    content: Cid
    name: str | None
    mime: str | None
    pinned: bool
    complete: bool
    added_at: float
    last_access: float
    origin: str = "added"


@dataclass(slots=True)
class VerifyReport:
    chunks_checked: int = 0
    #: Blobs checked (each blob's manifest is rebuilt from the index and checked).
    manifests_checked: int = 0
    corrupt: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    #: Always 0 in this layout (kept for callers that print it).
    manifests_restored: int = 0
    #: Always 0: files the index does not know are taken back (``adopted``), never deleted.
    untracked_removed: int = 0
    #: Blobs found on disk that the index had lost, now indexed again.
    adopted: int = 0
    #: Blobs a corrupt or missing file belonged to (they are partial now: a fetch repairs them).
    affected: list[Cid] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.corrupt and not self.missing


#: What ``close`` writes into the lock file: a lock file still naming a pid at the
#: next open means the last writer died without closing the store.
CLOSED_MARK: Final = b"closed\n"


def _lock_file(path: Path) -> tuple[int, bool]:
    """Take the writer lock; returns its fd and whether the last writer crashed."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise StoreLocked(f"store {path.parent} is in use by {holder}") from None
    crashed = os.pread(fd, 200, 0).startswith(b"pid ")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
    return fd, crashed


#: Threads reading ahead for ``read_blob_stream``, each with up to two chunks queued.
READ_AHEAD: Final = 4
#: Manifests kept in memory for the store's own reads (a 1 TiB blob's is 73 MiB at
#: most; the usual few MiB).
MANIFESTS_KEPT: Final = 8
_INFO_COLUMNS: Final = (
    "cid, size, chunk_count, content, name, mime, pinned, complete, added_at, last_access, origin"
)


class BlobStore:
    """The content-addressed store of one node (blocking; call from worker threads)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        gc_threshold: float = GC_THRESHOLD,
        gc_target: float = GC_TARGET,
        max_store_bytes: int | None = None,
        min_free_bytes: int = 0,
        clock: Callable[[], float] = time.time,
        readonly: bool = False,
        direct_io: bool = True,
    ) -> None:
        """Open (creating, converting) the store and take its writer lock.

        ``readonly`` opens a store another process is writing, for reading
        only: no lock, no recovery, no writes of any kind (a corrupt file is
        reported, and left for the writer to deal with). Complete blob files
        never change and the index is in WAL mode, so this is safe alongside
        the writer.
        """
        if not 0 < gc_target < gc_threshold <= 1:
            raise ValueError("need 0 < gc_target < gc_threshold <= 1")
        self.data_dir = data_dir
        self.readonly = readonly
        if readonly and not (data_dir / INDEX_NAME).exists():
            raise BlobError("not_found", f"no store in {data_dir}")
        data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = None
        crashed = False
        if not readonly:
            self._lock_fd, crashed = _lock_file(data_dir / "store.lock")
        #: One line for each thing opening found wrong and put right (also logged).
        self.notices: list[str] = []
        self.gc_threshold = gc_threshold
        self.gc_target = gc_target
        self.max_store_bytes = max_store_bytes
        self.min_free_bytes = min_free_bytes
        #: Blobs being read or fetched right now: GC never takes them.
        self._in_use: Counter[Cid] = Counter()
        #: Blobs a batch is placing and has not committed yet.
        self._writing: Counter[Cid] = Counter()
        #: Files being written as copies of blobs being fetched (``mirror``).
        self._mirrors: dict[Cid, list[Mirror]] = {}
        #: Recently used manifests (``_manifest``).
        self._manifests: OrderedDict[Cid, Manifest] = OrderedDict()
        self._clock = clock
        self.layout = Layout(data_dir, direct_io=direct_io, readonly=readonly)
        self._mutex = threading.RLock()
        #: Counts this process's committed index changes: a value read before a
        #: query still equal afterwards means the answer is still current.
        self.generation = 0
        self._batch_ids = itertools.count()
        index = data_dir / INDEX_NAME
        wal_lost = crashed and index.exists() and not index.with_name(INDEX_NAME + "-wal").exists()
        self._db = self._open_index(index, deep=crashed)
        self.pack = Pack(data_dir / PACK_NAME, readonly=readonly)
        if readonly:
            return
        recover(self, wal_lost)

    @property
    def direct_io(self) -> bool:
        return self.layout.direct_io

    def _open_index(self, path: Path, *, deep: bool) -> sqlite3.Connection:
        """Connect to the index (``index.open_index``); a damaged one is moved aside
        and a new one begun (``recovery.check_index`` then rebuilds it from the files on disk)."""
        opened = open_index(
            path,
            readonly=self.readonly,
            deep=deep,
            on_migrate=lambda v: self._notice(f"the index was version {v}: converting the store"),
        )
        if isinstance(opened, sqlite3.Connection):
            return opened
        if self.readonly:
            raise BlobError("io_error", f"the index {path} is damaged ({opened})")
        db, notice = fresh_index(path, opened)
        self._notice(notice)
        return db

    def _notice(self, text: str) -> None:
        log.warning("store %s: %s", self.data_dir, text)
        self.notices.append(text)

    def now(self) -> float:
        return self._clock()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One SQLite transaction under the index lock (the connection is in autocommit)."""
        with self._mutex:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self.generation += 1

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[Any]:
        """Rows of a read under the index lock; an index error is ``io_error``."""
        with self._mutex:
            try:
                return self._db.execute(sql, tuple(args)).fetchall()
            except sqlite3.Error as exc:
                raise BlobError("io_error", f"reading the index: {exc}") from None

    def close(self) -> None:
        with self._mutex:
            self._db.close()
            self.pack.close()
        if self._lock_fd is not None:
            os.ftruncate(self._lock_fd, 0)
            os.pwrite(self._lock_fd, CLOSED_MARK, 0)
            os.close(self._lock_fd)

    def __enter__(self) -> BlobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- batches' view of the store (batch.py) ------------------------------------

    def claim(self, cid: Cid) -> None:
        with self._mutex:
            self._writing[cid] += 1

    def release(self, cid: Cid) -> None:
        with self._mutex:
            self._writing[cid] -= 1
            if self._writing[cid] <= 0:
                del self._writing[cid]

    def writers(self, cid: Cid) -> int:
        with self._mutex:
            return self._writing[cid]

    def open_partial(self, cid: Cid, size: int) -> BlobFile:
        path = self.layout.partial(hex_of(cid))
        try:
            return BlobFile(path, write=True, direct=self.direct_io, size=size)
        except OSError as exc:
            raise io_error(f"opening {path}", exc) from None

    def mirror(self, cid: Cid, path: str) -> Mirror:
        """Write a copy of ``cid`` to ``path`` as its chunks are stored (each one
        verified by whoever stores it), so a caller that wants the blob in a file
        of its own pays no second read; ``Mirror.finish`` adds what was held before.
        Use as a context manager."""
        return Mirror(self, cid, path)

    def mirrored(self, cid: Cid, index: int, data: Buffer) -> None:
        """A chunk of ``cid`` was just written: copy it to the blob's mirrors."""
        for mirror in self._mirrors.get(cid, ()):
            mirror.write(index, data)

    def wanting(self, chunk: Cid) -> list[tuple[Cid, int, int]]:
        """(blob, size, index) of every partial blob lacking ``chunk``."""
        rows = self._query(
            "SELECT bc.blob, b.size, bc.idx FROM blob_chunks bc JOIN blobs b ON b.cid = bc.blob "
            "WHERE bc.chunk = ? AND b.complete = 0 AND NOT EXISTS "
            "(SELECT 1 FROM have h WHERE h.blob = bc.blob AND h.idx = bc.idx)",
            (chunk,),
        )
        return [(Cid(blob), size, index) for blob, size, index in rows]

    def index_new(self, db: sqlite3.Connection, new: Iterable[tuple[Manifest, bool, str]]) -> None:
        """Record complete blobs (inside a batch's transaction)."""
        index_blobs(db, list(new), now=self._clock(), complete=True)

    def drop_replaced_partials(self, cids: Iterable[Cid]) -> None:
        """Partial files of blobs that a whole copy just completed."""
        for cid in cids:
            hexpart = hex_of(cid)
            for path in (self.layout.partial(hexpart), self.layout.partial(hexpart) + ".manifest"):
                with suppress(FileNotFoundError):
                    os.unlink(path)

    # -- queries ---------------------------------------------------------------

    def has(self, cid: Cid) -> bool:
        """True when the chunk, or the complete blob, with this CID is stored."""
        return self.has_blob(cid) or bool(self.present_chunks([cid]))

    def has_chunk(self, cid: Cid) -> bool:
        return bool(self.present_chunks([cid]))

    def present_chunks(self, cids: Iterable[Cid]) -> set[Cid]:
        """Which of ``cids`` are held here (in any blob, or loose), in few queries."""
        return set(self._chunk_places(cids))

    def _chunk_places(self, cids: Iterable[Cid]) -> dict[Cid, tuple[str, int, int]]:
        """For each held chunk: (blob, index, length), the blob ``""`` when loose."""
        wanted = list(dict.fromkeys(cids))
        found: dict[Cid, tuple[str, int, int]] = {}
        for start in range(0, len(wanted), 400):
            part = wanted[start : start + 400]
            marks = ",".join("?" * len(part))
            rows = self._query(
                "SELECT bc.chunk, bc.blob, bc.idx, "
                "MIN(b.chunk_size, b.size - bc.idx * b.chunk_size) "
                f"FROM blob_chunks bc JOIN blobs b ON b.cid = bc.blob WHERE bc.chunk IN ({marks}) "
                "AND (b.complete = 1 OR EXISTS "
                "(SELECT 1 FROM have h WHERE h.blob = bc.blob AND h.idx = bc.idx))",
                part,
            )
            for chunk, blob, index, length in rows:
                found.setdefault(Cid(chunk), (blob, index, length))
            loose = self._query(f"SELECT cid, LENGTH(data) FROM loose WHERE cid IN ({marks})", part)
            for chunk, length in loose:
                found.setdefault(Cid(chunk), ("", -1, length))
        return found

    def has_blob(self, cid: Cid) -> bool:
        """True only when the blob is complete (its bytes checked against its content)."""
        rows = self._query("SELECT complete FROM blobs WHERE cid = ?", (cid,))
        return bool(rows) and rows[0][0] == 1

    def stat(self, cid: Cid) -> BlobInfo:
        rows = self._query(f"SELECT {_INFO_COLUMNS} FROM blobs WHERE cid = ?", (cid,))
        if not rows:
            raise BlobError("not_found", cid)
        return _blob_info(rows[0])

    def list_cids(
        self,
        prefix: str = "",
        *,
        after: str = "",
        limit: int | None = None,
        complete_only: bool = True,
    ) -> list[BlobInfo]:
        """Blobs whose CID starts with ``prefix``, in CID order, after ``after`` (pagination)."""
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else "\U0010ffff"
        sql = f"SELECT {_INFO_COLUMNS} FROM blobs WHERE cid >= ? AND cid < ? AND cid != ?"
        if complete_only:
            sql += " AND complete = 1"
        sql += " ORDER BY cid LIMIT ?"
        rows = self._query(sql, (max(prefix, after), upper, after, -1 if limit is None else limit))
        return [_blob_info(r) for r in rows]

    def count(self) -> int:
        """Complete blobs held."""
        return int(self._query("SELECT COUNT(*) FROM blobs WHERE complete = 1")[0][0])

    def total_bytes(self) -> int:
        """Bytes the store holds: complete blobs, the chunks partial blobs hold (a
        partial file is sparse until written), and chunks uploaded ahead of their
        manifest."""
        [(whole, held, loose)] = self._query(
            "SELECT (SELECT COALESCE(SUM(size), 0) FROM blobs WHERE complete = 1), "
            "(SELECT COALESCE(SUM(MIN(b.chunk_size, b.size - h.idx * b.chunk_size)), 0) "
            "FROM have h JOIN blobs b ON b.cid = h.blob), "
            "(SELECT COALESCE(SUM(LENGTH(data)), 0) FROM loose)"
        )
        return int(whole) + int(held) + int(loose)

    def missing_chunks(self, cid: Cid) -> list[int]:
        """Indices of the blob's chunks not yet stored (its manifest must be known)."""
        rows = self._query("SELECT chunk_count, complete FROM blobs WHERE cid = ?", (cid,))
        if not rows:
            raise BlobError("not_found", cid)
        count, complete = rows[0]
        if complete:
            return []
        have = {r[0] for r in self._query("SELECT idx FROM have WHERE blob = ?", (cid,))}
        return [i for i in range(count) if i not in have]

    def blob_path(self, cid: Cid) -> str | None:
        """The file holding a complete blob's bytes (None for one kept in the pack)."""
        info = self.stat(cid)
        if not info.complete:
            raise BlobError("not_found", cid)
        return None if info.size <= INLINE_MAX else self.layout.complete(hex_of(cid))

    # -- reads -----------------------------------------------------------------

    def read_manifest(self, cid: Cid) -> Manifest:
        """The blob's manifest, rebuilt from the index and checked against its CID
        (complete or partial blob), with its name and mime; a read: it counts as
        the blob's last access."""
        rows = self._query("SELECT name, mime FROM blobs WHERE cid = ?", (cid,))
        if not rows:
            raise BlobError("not_found", cid)
        manifest = self._manifest(cid)
        self._touch(cid)
        return replace(manifest, name=rows[0][0], mime=rows[0][1])

    def _manifest(self, cid: Cid) -> Manifest:
        """The blob's manifest without name or mime, from a few kept in memory (a
        CID names one manifest forever); the store's own reads use it, so serving
        one chunk of a large blob costs no pass over its chunk list, nor an
        access-time write."""
        with self._mutex:
            manifest = self._manifests.get(cid)
            if manifest is not None:
                self._manifests.move_to_end(cid)
                return manifest
        rows = self._query("SELECT size, chunk_size, content FROM blobs WHERE cid = ?", (cid,))
        if not rows:
            raise BlobError("not_found", cid)
        size, chunk_size, content = rows[0]
        chunks = self._query("SELECT chunk FROM blob_chunks WHERE blob = ? ORDER BY idx", (cid,))
        manifest = Manifest(size, chunk_size, tuple(r[0] for r in chunks), content)
        if manifest.cid != cid:
            raise BlobError("io_error", f"{cid}: the index entry does not match its CID")
        with self._mutex:
            self._manifests[cid] = manifest
            while len(self._manifests) > MANIFESTS_KEPT:
                self._manifests.popitem(last=False)
        return manifest

    def read_chunk(self, cid: Cid) -> bytes:
        """The chunk's bytes, from whichever blob holds it, re-hashed."""
        place = self._chunk_places([cid]).get(cid)
        if place is None:
            raise BlobError("not_found", cid)
        blob, index, _length = place
        if not blob:
            rows = self._query("SELECT data FROM loose WHERE cid = ?", (cid,))
            if not rows or cid_of(rows[0][0]) != cid:
                raise BlobError("not_found", cid)
            return bytes(rows[0][0])
        return self.read_chunks(self._manifest(Cid(blob)), [index])[0]

    def read_chunks(self, manifest: Manifest, indices: list[int]) -> list[bytes]:
        """Chunks of a blob by index, each re-hashed. A chunk not held is
        ``not_found``; one found corrupt is kept aside and ``hash_mismatch``."""
        return [bytes(view) for view in self._read(manifest, indices)]

    def _read(self, manifest: Manifest, indices: list[int]) -> Iterator[memoryview]:
        cid = manifest.cid
        rows = self._query("SELECT complete FROM blobs WHERE cid = ?", (cid,))
        if not rows:
            raise BlobError("not_found", cid)
        complete = rows[0][0] == 1
        if not complete:
            have = {r[0] for r in self._query("SELECT idx FROM have WHERE blob = ?", (cid,))}
            if not have.issuperset(indices):
                raise BlobError(
                    "not_found", f"{cid}: chunks {sorted(set(indices) - have)} not held"
                )
        if manifest.size <= INLINE_MAX:
            data = self.pack.get(cid)
            for index in indices:
                yield self._checked(manifest, index, memoryview(data or b""), complete)
            return
        blob_file = self._open_either(cid, complete)
        if blob_file is None:
            if not self.readonly:
                self._lost(manifest)
            raise BlobError("not_found", f"{cid}: its file is missing")
        with blob_file:
            for index in indices:
                try:
                    view = blob_file.read_at(
                        index * manifest.chunk_size, manifest.chunk_length(index)
                    )
                except OSError as exc:
                    raise io_error(f"reading {blob_file.path}", exc) from None
                yield self._checked(manifest, index, view, complete)

    def _open_either(self, cid: Cid, complete: bool) -> BlobFile | None:
        """The blob's file where its state says, else where it is moving to (a
        completion or a demotion can rename it between the query and the open; every
        chunk read is checked, so either file serves). None when neither is there."""
        hexpart = hex_of(cid)
        paths = [self.layout.complete(hexpart), self.layout.partial(hexpart)]
        for path in paths if complete else paths[::-1]:
            try:
                return BlobFile(path, write=False, direct=self.direct_io)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise io_error(f"opening {path}", exc) from None
        return None

    def _lost(self, manifest: Manifest) -> None:
        """A blob's file vanished: it holds nothing now (a fetch brings it back)."""
        with self.tx() as db:
            db.execute("UPDATE blobs SET complete = 0 WHERE cid = ?", (manifest.cid,))
            db.execute("DELETE FROM have WHERE blob = ?", (manifest.cid,))
        self._notice(f"{manifest.cid}: its file is missing; it is partial now")

    def _checked(self, m: Manifest, index: int, view: memoryview, complete: bool) -> memoryview:
        """The chunk read, if its bytes are the manifest's (the last one must also end
        the file: a longer file is not the blob)."""
        length = m.chunk_length(index)
        chunk = view[:length]
        last = index == len(m.chunks) - 1
        whole = len(view) == length or (len(view) > length and not last)
        if whole and cid_of(chunk) == m.chunks[index]:
            return chunk
        where = self._found_corrupt(m, index, chunk, complete)
        raise BlobError("hash_mismatch", f"{m.cid}: chunk {index} corrupt on disk, kept at {where}")

    def _found_corrupt(self, m: Manifest, index: int, data: Buffer, complete: bool) -> str:
        """Keep corrupt bytes aside; the blob becomes partial without that chunk."""
        if self.readonly:
            return "(left in place: store opened read-only)"
        where = self.layout.keep_corrupt(f"{hex_of(m.cid)}.{index}", data)
        with self._mutex:
            hexpart = hex_of(m.cid)
            still = self._query("SELECT complete FROM blobs WHERE cid = ?", (m.cid,))
            if complete and still and still[0][0] == 1:
                if m.size > INLINE_MAX:
                    self._write_sidecar(m)
                    os.replace(self.layout.complete(hexpart), self.layout.partial(hexpart))
                with self.tx() as db:
                    db.execute("UPDATE blobs SET complete = 0 WHERE cid = ?", (m.cid,))
                    db.executemany(
                        "INSERT OR IGNORE INTO have (blob, idx) VALUES (?, ?)",
                        ((m.cid, i) for i in range(len(m.chunks)) if i != index),
                    )
            else:
                with self.tx() as db:
                    db.execute("DELETE FROM have WHERE blob = ? AND idx = ?", (m.cid, index))
        self._notice(
            f"{m.cid}: chunk {index} was corrupt on disk (kept at {where}); blob is partial"
        )
        return where

    def read_blob_stream(
        self, cid: Cid, start: int = 0, end: int | None = None
    ) -> Iterator[memoryview]:
        """Yield the blob's bytes [start, end) in order, each chunk verified.

        The whole blob must be complete; a range needs only the chunks covering
        it (a range fetch leaves the rest missing). ``READ_AHEAD`` threads read
        and hash the next chunks while the caller writes this one out.
        """
        whole = start == 0 and end is None
        if whole and not self.has_blob(cid):
            raise BlobError("not_found", cid)
        manifest = self.read_manifest(cid)
        end = manifest.size if end is None else min(end, manifest.size)
        if not 0 <= start <= end:
            raise ValueError(f"bad byte range {start}-{end}")
        if not whole and set(manifest.chunk_range(start, end)) & set(self.missing_chunks(cid)):
            raise BlobError("not_found", f"{cid}: bytes {start}-{end} are not all here")
        return self._stream(manifest, start, end)

    def export(self, cid: Cid) -> Iterator[memoryview]:
        """Yield a complete blob's bytes in large pieces, checked against its
        ``content`` as a whole (BLAKE3 over every byte, in threads) rather than chunk
        by chunk: the cheapest read there is, for a caller that writes a file and
        keeps it only once the iteration has ended without error (``get -o``). A
        mismatch is ``hash_mismatch`` after the last piece; the chunks are then
        checked one by one, so the corrupt ones are taken out of service."""
        info = self.stat(cid)
        if not info.complete:
            raise BlobError("not_found", cid)
        if info.size <= INLINE_MAX:
            yield from self._stream(self.read_manifest(cid), 0, info.size)
            return
        hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
        path = self.layout.complete(hex_of(cid))
        with self.using(cid):
            try:
                with (
                    BlobFile(path, write=False, direct=self.direct_io) as blob,
                    Scratch(HASH_PIECE) as view,
                ):
                    offset = 0
                    while got := blob.read_into(view, offset):
                        hasher.update(view[:got])
                        yield view[:got]
                        offset += got
            except FileNotFoundError:
                raise BlobError("not_found", f"{cid}: its file is missing") from None
            except OSError as exc:
                raise io_error(f"reading {path}", exc) from None
            if offset == info.size and cid_from_digest(hasher.digest()) == info.content:
                return
            manifest = self._manifest(cid)
            for index in range(len(manifest.chunks)):
                with suppress(BlobError):
                    self.read_chunks(manifest, [index])
            raise BlobError("hash_mismatch", f"{cid}: its file does not hold its bytes")

    def _stream(self, m: Manifest, start: int, end: int) -> Iterator[memoryview]:
        indices = iter(m.chunk_range(start, end))
        with (
            self.using(m.cid),
            ThreadPoolExecutor(READ_AHEAD, thread_name_prefix="read-ahead") as pool,
        ):
            ahead = deque(
                (i, pool.submit(self.read_chunks, m, [i]))
                for i in itertools.islice(indices, 2 * READ_AHEAD)
            )
            while ahead:
                index, future = ahead.popleft()
                [data] = future.result()
                for more in itertools.islice(indices, 1):
                    ahead.append((more, pool.submit(self.read_chunks, m, [more])))
                base = index * m.chunk_size
                yield memoryview(data)[max(start - base, 0) : min(end - base, len(data))]

    def _touch(self, cid: Cid) -> None:
        if self.readonly:
            return
        with suppress(sqlite3.Error), self._mutex:  # an access time is not worth failing a read
            self._db.execute("UPDATE blobs SET last_access = ? WHERE cid = ?", (self._clock(), cid))

    # -- writes ----------------------------------------------------------------

    def batch(self) -> WriteBatch:
        """A group of writes made durable and visible together (use as a context manager)."""
        if self.readonly:
            raise BlobError("io_error", "store opened read-only")
        return WriteBatch(self, f"b{os.getpid()}-{next(self._batch_ids)}")

    def write_chunk(self, cid: Cid, data: Buffer) -> None:
        """Verify and keep one chunk ahead of its manifest; a no-op when already held."""
        with self.batch() as batch:
            batch.write_chunk(cid, data)

    def write_blob(self, manifest: Manifest, chunks: Iterable[Buffer], *, pin: bool = False) -> Cid:
        """Store a blob from its manifest and chunks in order (each verified)."""
        check_manifest(manifest)
        expected = iter(range(len(manifest.chunks)))

        def checked() -> Iterator[Buffer]:
            for data in chunks:
                index = next(expected, None)
                if index is None:
                    raise BlobError("manifest_invalid", "more chunks than the manifest lists")
                check_chunk(manifest, index, data)
                yield data

        with self.batch() as batch:
            built = self._add_chunks(checked(), batch, manifest.name, manifest.mime, pin, "added")
            if built.cid != manifest.cid:
                raise BlobError("manifest_invalid", "the chunks do not make the manifest's blob")
        return manifest.cid

    def add_stream(
        self,
        stream: BinaryIO,
        *,
        name: str | None = None,
        mime: str | None = None,
        pin: bool = False,
        progress: Callable[[int], None] | None = None,
        batch: WriteBatch | None = None,
        origin: str = "added",
    ) -> Manifest:
        """Chunk, hash and store a stream in one pass; memory stays at one chunk.

        With ``batch`` the blob becomes durable and visible when that batch
        commits (many small files, one flush); otherwise before this returns.
        """
        if batch is None:
            with self.batch() as own:
                return self.add_stream(
                    stream,
                    name=name,
                    mime=mime,
                    pin=pin,
                    progress=progress,
                    batch=own,
                    origin=origin,
                )

        def counted() -> Iterator[memoryview]:
            for view in iter_chunks(stream, buf=_read_buffer()):
                yield view
                if progress is not None:
                    progress(len(view))

        return self._add_chunks(counted(), batch, name, mime, pin, origin)

    def _add_chunks(
        self,
        chunks: Iterable[Buffer],
        batch: WriteBatch,
        name: str | None,
        mime: str | None,
        pin: bool,
        origin: str,
    ) -> Manifest:
        """Hash chunks into a manifest and write them into a new file (or keep a
        small blob's bytes for the pack); the batch makes the blob visible."""
        builder = ManifestBuilder()
        it = iter(chunks)
        first = next(it, None)
        if first is None or (len(first) <= INLINE_MAX and len(first) < CHUNK_SIZE):
            data = bytes(first or b"")
            if data:
                builder.add(data)
            manifest = builder.finish(name, mime)
            batch.add_small(manifest, data, pin=pin, origin=origin)
            return manifest
        tmp = batch.temp_path()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                writer = SequentialWriter(fd, direct=self.direct_io)
                for view in itertools.chain([first], it):
                    builder.add(view)
                    writer.write(view)
            finally:
                os.close(fd)
        except OSError as exc:
            with suppress(OSError):
                os.unlink(tmp)
            raise io_error("writing a new blob", exc) from None
        except BaseException:
            with suppress(OSError):
                os.unlink(tmp)
            raise
        manifest = builder.finish(name, mime)
        batch.place(tmp, manifest, pin=pin, origin=origin)
        return manifest

    def add_bytes(self, data: bytes, *, name: str | None = None, pin: bool = False) -> Manifest:
        import io

        return self.add_stream(io.BytesIO(data), name=name, pin=pin)

    def begin_blob(self, manifest: Manifest, *, origin: str = "fetched") -> None:
        """Record a manifest whose chunks will arrive later (a fetch, a put); resumable.

        Chunks the store already holds are copied into the new blob at once (a
        chunk is never sent twice). Refused (``manifest_invalid``, nothing
        recorded) when the manifest breaks DESIGN.md section 5 in a way visible
        now: a wrong chunk size or count, or a chunk held here whose length is
        not the one the manifest gives it.
        """
        check_manifest(manifest)
        if self._query("SELECT 1 FROM blobs WHERE cid = ?", (manifest.cid,)):
            return
        places = self._chunk_places(manifest.chunks)
        held = [i for i, chunk in enumerate(manifest.chunks) if chunk in places]
        for index in held:
            length = places[manifest.chunks[index]][2]
            if length != manifest.chunk_length(index):
                raise BlobError(
                    "manifest_invalid",
                    f"chunk {index} holds {length} bytes, the manifest gives it "
                    f"{manifest.chunk_length(index)}",
                )
        if manifest.size > INLINE_MAX:
            self._write_sidecar(manifest)
            self.open_partial(manifest.cid, manifest.size).close()
        with self.tx() as db:
            index_blob(db, manifest, pin=False, origin=origin, now=self._clock(), complete=False)
        for start in range(0, len(held), 16):  # copied locally, a group at a time
            group = []
            for index in held[start : start + 16]:
                with suppress(BlobError):  # gone or corrupt since: it will be fetched
                    group.append((index, self.read_chunk(manifest.chunks[index])))
            with self.batch() as batch:
                batch.write_chunks(manifest, group)
        taken = [manifest.chunks[i] for i in held if not places[manifest.chunks[i]][0]]
        if taken:  # loose chunks a blob now holds: kept once, in the blob
            with self.tx() as db:
                db.executemany("DELETE FROM loose WHERE cid = ?", ((c,) for c in set(taken)))

    def _write_sidecar(self, manifest: Manifest) -> None:
        path = self.layout.partial(hex_of(manifest.cid)) + ".manifest"
        try:
            with open(path, "wb") as out:
                out.write(manifest.encode())
        except OSError as exc:
            raise io_error(f"writing {path}", exc) from None

    def complete_blob(self, cid: Cid, *, hashed: bytes | None = None) -> bool:
        """Make a blob complete if every chunk is stored and its manifest holds;
        returns whether it is complete.

        Before the blob becomes visible, its ``content`` is checked against the
        BLAKE3 of the whole bytes (DESIGN.md section 5): the blob CID proves only
        the manifest's bytes, not that they describe these chunks. A manifest that
        fails is ``manifest_invalid`` and nothing of it is kept. ``hashed``: that
        BLAKE3 as the caller computed it from the bytes it stored, each chunk
        verified against its CID, in index order (a fetch,
        transfer/contenthash.py), which spares reading the blob back.
        """
        if self.has_blob(cid):
            return True
        if self.missing_chunks(cid):
            return False
        manifest = self.read_manifest(cid)
        hexpart = hex_of(cid)
        small = manifest.size <= INLINE_MAX
        path = "" if small else self.layout.partial(hexpart)
        if not self._content_matches(manifest, path, hashed):
            self._delete_blobs([cid])
            raise BlobError("manifest_invalid", f"{cid}: content is not the BLAKE3 of its bytes")
        if not small:
            final = self.layout.complete(hexpart)
            try:
                with open(path, "rb") as blob_file:
                    os.fsync(blob_file.fileno())
                shard = self.layout.shard_for(hexpart)
                os.replace(path, final)
                fsync_path(shard, directory=True)
            except OSError as exc:
                raise io_error(f"completing {cid}", exc) from None
        with self.tx() as db:
            db.execute("UPDATE blobs SET complete = 1 WHERE cid = ?", (cid,))
            db.execute("DELETE FROM have WHERE blob = ?", (cid,))
        if not small:
            with suppress(FileNotFoundError):
                os.unlink(path + ".manifest")
        return True

    def _content_matches(
        self, manifest: Manifest, path: str, hashed: bytes | None = None
    ) -> bool:
        """Whether the blob's bytes (its file, or its pack row) hash to ``content``;
        ``hashed``, when given, is their hash (``complete_blob``)."""
        if hashed is not None and manifest.size > INLINE_MAX:
            try:
                if os.path.getsize(path) != manifest.size:
                    return False
            except OSError as exc:
                raise io_error(f"reading {path}", exc) from None
            return cid_from_digest(hashed) == manifest.content
        if manifest.size <= INLINE_MAX:
            data = self.pack.get(manifest.cid) or b""
            return len(data) == manifest.size and cid_of(data) == manifest.content
        try:
            if os.path.getsize(path) != manifest.size:
                return False
            digest = hash_file(path, direct=self.direct_io)
        except OSError as exc:
            raise io_error(f"reading {path}", exc) from None
        return cid_from_digest(digest) == manifest.content

    def discard_partial(self, cid: Cid) -> None:
        """Forget a blob that is not complete (a put whose manifest proved false)."""
        rows = self._query("SELECT complete FROM blobs WHERE cid = ?", (cid,))
        if rows and rows[0][0] == 0:
            self._delete_blobs([cid])

    def keep(self, cid: Cid, *, name: str | None = None) -> None:
        """Pin a blob and, when given, name it (a download that found it held)."""
        with self.tx() as db:
            cur = db.execute(
                "UPDATE blobs SET pinned = 1, name = COALESCE(?, name) WHERE cid = ?", (name, cid)
            )
        if cur.rowcount == 0:
            raise BlobError("not_found", cid)

    # -- pins, removal, GC -----------------------------------------------------

    def pin(self, cid: Cid) -> None:
        self._set_pin(cid, True)

    def unpin(self, cid: Cid) -> None:
        self._set_pin(cid, False)

    def _set_pin(self, cid: Cid, pinned: bool) -> None:
        with self.tx() as db:
            cur = db.execute("UPDATE blobs SET pinned = ? WHERE cid = ?", (int(pinned), cid))
        if cur.rowcount == 0:
            raise BlobError("not_found", cid)

    def remove(self, cid: Cid, *, force: bool = False) -> int:
        """Remove a blob now. Returns bytes freed."""
        info = self.stat(cid)
        if info.pinned and not force:
            raise PinnedError(f"{cid} is pinned; unpin it first")
        return self._delete_blobs([cid])

    def using(self, cid: Cid) -> _InUse:
        """Hold ``cid`` against GC while the block runs (a read, a fetch)."""
        return _InUse(self, cid)

    def bytes_to_free(self) -> float:
        """What GC must free now (``gc.bytes_to_free``, on this store's bounds)."""
        return bytes_to_free(
            used=self.total_bytes,
            max_store_bytes=self.max_store_bytes,
            gc_threshold=self.gc_threshold,
            gc_target=self.gc_target,
            min_free_bytes=self.min_free_bytes,
            data_dir=self.data_dir,
        )

    def gc(self, *, everything: bool = False) -> GcReport:
        """Evict least-recently-used unpinned blobs, never one in use, until
        ``bytes_to_free`` is met; with ``everything`` every unpinned blob not in
        use goes. Chunks uploaded ahead of a manifest that never came go after
        ``LOOSE_TTL_S`` (all of them with ``everything``). The report names
        every blob evicted (each an event)."""
        freed = self._drop_loose(everything)
        to_free = float("inf") if everything else self.bytes_to_free()
        removed: list[Cid] = []
        while to_free > 0:
            with self._mutex:
                victims = pick_victims(self._db, list(self._in_use), to_free, everything)
            if not victims:
                break
            gained = self._delete_blobs(victims)
            removed += victims
            freed += gained
            to_free -= gained
        return GcReport(tuple(removed), freed)

    def _drop_loose(self, everything: bool) -> int:
        cutoff = float("inf") if everything else self._clock() - LOOSE_TTL_S
        with self.tx() as db:
            size = db.execute(
                "SELECT COALESCE(SUM(LENGTH(data)), 0) FROM loose WHERE added_at < ?", (cutoff,)
            ).fetchone()[0]
            db.execute("DELETE FROM loose WHERE added_at < ?", (cutoff,))
        return int(size)

    def _delete_blobs(self, cids: list[Cid]) -> int:
        """Drop blobs from the index, then their files (journalled: a crash in
        between leaves files the next open removes, never rows without files)."""
        rows: list[Any] = []
        for start in range(0, len(cids), 400):
            part = cids[start : start + 400]
            marks = ",".join("?" * len(part))
            rows += self._query(
                f"SELECT cid, size, complete FROM blobs WHERE cid IN ({marks})", part
            )
        journal = Journal(self.layout.tmp, f"d{os.getpid()}-{next(self._batch_ids)}")
        journal.note_all(f"{'c' if done else 'p'}:{hex_of(cid)}" for cid, size, done in rows)
        journal.note_all(f"s:{hex_of(cid)}" for cid, size, _ in rows if size <= INLINE_MAX)
        with self.tx() as db:
            db.execute("CREATE TEMP TABLE IF NOT EXISTS doomed (cid TEXT PRIMARY KEY)")
            db.execute("DELETE FROM doomed")
            db.executemany("INSERT OR IGNORE INTO doomed VALUES (?)", ((r[0],) for r in rows))
            for table, column in (("have", "blob"), ("blob_chunks", "blob"), ("blobs", "cid")):
                db.execute(f"DELETE FROM {table} WHERE {column} IN (SELECT cid FROM doomed)")
        small = [cid for cid, size, _ in rows if size <= INLINE_MAX]
        if small:
            self.pack.delete_many(small)
        for cid, size, done in rows:
            if size > INLINE_MAX:
                self._unlink_blob_files(Cid(cid), bool(done))
        journal.discard()
        return int(sum(size for _, size, _ in rows))

    def _unlink_blob_files(self, cid: Cid, complete: bool) -> None:
        hexpart = hex_of(cid)
        paths = [self.layout.partial(hexpart), self.layout.partial(hexpart) + ".manifest"]
        if complete and not self.writers(cid):
            paths.append(self.layout.complete(hexpart))
        for path in paths:
            with suppress(FileNotFoundError):
                os.unlink(path)

    # -- verify ----------------------------------------------------------------

    def verify(self, progress: Callable[[int], None] | None = None) -> VerifyReport:
        """Re-hash every chunk held; keep corrupt bytes aside and name the blobs
        they belonged to (partial now); take back files the index does not know
        (never delete them)."""
        report = VerifyReport()
        self._check_pages()
        report.adopted = adopt(self)
        for (cid,) in self._query("SELECT cid FROM blobs"):
            report.manifests_checked += 1
            try:  # not read_manifest: a verify is no access, and must not reorder GC
                manifest = self._manifest(Cid(cid))
                missing = set(self.missing_chunks(Cid(cid)))
            except BlobError as exc:
                report.corrupt.append(f"blob {cid}: {exc.detail}")
                report.affected.append(Cid(cid))
                continue
            held = [i for i in range(len(manifest.chunks)) if i not in missing]
            self._verify_chunks(manifest, held, report)
            if progress is not None:
                progress(sum(manifest.chunk_length(i) for i in held))
        report.affected = sorted(set(report.affected))
        return report

    def _verify_chunks(self, manifest: Manifest, held: list[int], report: VerifyReport) -> None:
        """Read every held chunk in one pass over the file; after a bad one (taken
        out of service by the read), go on with the rest."""
        while held:
            read = 0
            try:
                for _ in self._read(manifest, held):
                    read += 1
            except BlobError as exc:
                report.chunks_checked += read + 1
                bucket = report.missing if exc.code == "not_found" else report.corrupt
                bucket.append(f"chunk {held[read]} of {manifest.cid}: {exc.detail}")
                report.affected.append(manifest.cid)
                if exc.code == "not_found":
                    return  # the whole file is gone: one line for it
                held = held[read + 1 :]
                continue
            report.chunks_checked += read
            return

    def _check_pages(self) -> None:
        """``verify``'s check of the index itself: a damaged one is replaced and
        rebuilt from disk, as at open."""
        with self._mutex:
            problem = quick_check(self._db)
            if problem == "ok":
                return
            self._db.close()
            self._db, notice = fresh_index(self.data_dir / INDEX_NAME, problem)
            self._notice(notice)
            self.generation += 1
        check_index(self, wal_lost=False)


#: Chunk writes a mirror may have queued (``Mirror.write``): each goes to the caller's
#: file in a thread of the mirror's own, so a chunk's two direct writes (the blob's file
#: and the copy) wait for the device at the same time rather than one after the other;
#: past this many (2 MiB), the store's writer waits for the copy.
MIRROR_QUEUE: Final = 8


class Mirror:
    """``BlobStore.mirror``: a file kept equal to a blob as it is stored."""

    def __init__(self, store: BlobStore, cid: Cid, path: str) -> None:
        self._store, self._cid, self.path = store, cid, path
        self._written: set[int] = set()
        self._failed: OSError | None = None
        try:
            self._file = BlobFile(path, write=True, direct=store.direct_io)
        except OSError as exc:
            raise io_error(f"opening {path}", exc) from None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="mirror")
        self._queued: deque[Future[None]] = deque()
        self._lock = threading.Lock()

    def __enter__(self) -> Mirror:
        with self._store._mutex:
            self._store._mirrors.setdefault(self._cid, []).append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._store._mutex:
            mirrors = self._store._mirrors[self._cid]
            mirrors.remove(self)
            if not mirrors:
                del self._store._mirrors[self._cid]
        self._pool.shutdown(wait=True)  # the writes queued end before the file closes
        self._file.close()

    def write(self, index: int, data: Buffer) -> None:
        """Queue a copy of a chunk just stored (``MIRROR_QUEUE``)."""
        if self._failed is not None:
            return
        copy = data if isinstance(data, bytes) else bytes(data)  # the caller may reuse it
        with self._lock:
            while len(self._queued) >= MIRROR_QUEUE:
                self._queued.popleft().result()
            self._queued.append(self._pool.submit(self._write, index, copy))

    def _write(self, index: int, data: bytes) -> None:
        if self._failed is not None:
            return
        try:
            self._file.write_at(index * CHUNK_SIZE, data)
        except OSError as exc:  # the copy fails, not the store's write
            self._failed = exc
            return
        self._written.add(index)

    def drain(self) -> None:
        """Wait until every copy queued so far is written (or has failed)."""
        with self._lock:
            while self._queued:
                self._queued.popleft().result()

    def finish(self, manifest: Manifest) -> None:
        """Add the chunks stored before the mirror began (read and verified), and
        end the file at the blob's size."""
        self.drain()
        if self._failed is not None:
            raise io_error(f"writing {self.path}", self._failed)
        store = self._store
        todo = [i for i in range(len(manifest.chunks)) if i not in self._written]
        try:
            if len(todo) == len(manifest.chunks):  # all of it: the cheapest whole read
                offset = 0
                for view in store.export(manifest.cid):
                    self._file.write_at(offset, view)
                    offset += len(view)
            for start in range(0, len(todo) if self._written else 0, 8):
                group = todo[start : start + 8]
                for index, data in zip(group, store.read_chunks(manifest, group), strict=True):
                    self._file.write_at(index * CHUNK_SIZE, data)
            os.truncate(self.path, manifest.size)
        except OSError as exc:
            raise io_error(f"writing {self.path}", exc) from None


class _InUse:
    """``BlobStore.using``: a count per blob, so nested and concurrent holds add up."""

    def __init__(self, store: BlobStore, cid: Cid) -> None:
        self._store, self._cid = store, cid

    def __enter__(self) -> None:
        with self._store._mutex:
            self._store._in_use[self._cid] += 1

    def __exit__(self, *exc: object) -> None:
        with self._store._mutex:
            in_use = self._store._in_use
            in_use[self._cid] -= 1
            if in_use[self._cid] <= 0:
                del in_use[self._cid]


_local = threading.local()


def _read_buffer() -> bytearray:
    """This thread's buffer for reading a stream being added (reused: a fresh
    256 KiB per small file costs more in page faults than the file's whole add)."""
    buf: bytearray | None = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = bytearray(CHUNK_SIZE)
    return buf


def _blob_info(row: tuple[Any, ...]) -> BlobInfo:
    cid, size, count, content, name, mime, pinned, complete, added, access, origin = row
    return BlobInfo(
        cid, size, count, content, name, mime, bool(pinned), bool(complete), added, access, origin
    )


def copy_out(store: BlobStore, cid: Cid, dest: BinaryIO) -> int:
    """Write a stored blob to ``dest``; returns bytes written."""
    written = 0
    for view in store.read_blob_stream(cid):
        dest.write(view)
        written += len(view)
    return written


__all__ = [
    "GC_TARGET",
    "GC_THRESHOLD",
    "INLINE_MAX",
    "ORIGINS",
    "BlobError",
    "BlobInfo",
    "BlobStore",
    "GcReport",
    "PinnedError",
    "StoreLocked",
    "VerifyReport",
    "WriteBatch",
    "copy_out",
]
