"""BlobStore: content-addressed chunks and manifests on disk, indexed in SQLite.

Ring: blobs (layer 1, blocking). Owns the on-disk layout, the writer lock, the
public API callers use (has/read/write/pin/remove/gc/verify) and recovery at
open. Its parts: ``index.py`` (the SQLite schema and the rows a manifest
makes), ``batch.py`` (``WriteBatch`` and its journal), ``gc.py`` (eviction
planning).

Layout (DESIGN.md section 3)::

    <data>/blobs/<aa>/<rest-of-hex>             a chunk
    <data>/blobs/<aa>/<rest-of-hex>.manifest    a blob's canonical manifest
    <data>/blobs/.tmp/                          writes in progress, batch journals
    <data>/blobs/.corrupt/                      files found corrupt, kept for inspection
    <data>/index.sqlite3                        the index (WAL, ``index.py``)
    <data>/store.lock                           held by the one process writing the store

Crash safety. Writes happen in batches (``batch.py``): a file is in the index
only once its bytes are on disk, and a crash anywhere leaves either the old
index or the new one. Whatever a crashed batch left on disk is listed in its
journal; opening the store removes those of its files the index does not know.
Deletions use the same journal: names are noted, the index rows go in one
transaction, then the files. A blob is visible (``has_blob``) only when its
manifest and every chunk are committed.

Integrity. Every write is checked against its CID before it lands, and every
read re-hashes what it read. A file found corrupt is moved to ``.corrupt/``,
dropped from the index (blobs using it become incomplete) and reported, never
served.

Threads. One process owns the store (``store.lock``); inside it, the store may
be called from several worker threads: the index is guarded by a lock, and
chunks being written by an open batch are counted so an aborting batch never
deletes a file another batch is about to commit.
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
import sqlite3
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final

import blake3

from hearthfile.blobs.backend import Buffer, ChunkBackend, LocalBackend
from hearthfile.blobs.batch import MANIFEST_SUFFIX, Journal, WriteBatch
from hearthfile.blobs.chunker import (
    CHUNK_SIZE,
    BlobError,
    Manifest,
    ManifestBuilder,
    check_chunk,
    check_manifest,
    decode_manifest,
    iter_chunks,
)
from hearthfile.blobs.gc import (
    GC_TARGET,
    GC_THRESHOLD,
    GcReport,
    bytes_to_free,
    pick_victims,
)
from hearthfile.blobs.index import (
    COMPLETE_IF_LENGTHS_HOLD,
    INDEX_NAME,
    fresh_index,
    index_manifest,
    lengths_args,
    open_index,
    quick_check,
)
from hearthfile.cids import Cid, cid_from_digest, cid_of, hex_of
from hearthfile.errors import HearthError

log = logging.getLogger(__name__)

#: The longest chunk file there can be (version 1 has one chunk size).
MAX_CHUNK_BYTES: Final = CHUNK_SIZE


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


@dataclass(slots=True)
class VerifyReport:
    chunks_checked: int = 0
    manifests_checked: int = 0
    corrupt: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    manifests_restored: int = 0
    #: Always 0: files the index does not know are taken back (``adopted``), never
    #: deleted (kept for callers that print it).
    untracked_removed: int = 0
    #: Blobs and chunks found on disk that the index had lost, now indexed again.
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
        backend: ChunkBackend | None = None,
        readonly: bool = False,
        direct_io: bool = True,
    ) -> None:
        """Open (creating) the store and take its writer lock.

        ``readonly`` opens a store another process is writing, for reading
        only: no lock, no recovery, no writes of any kind (a corrupt file is
        reported, and left for the writer to move aside). Chunk files never
        change once written and the index is in WAL mode, so this is safe
        alongside the writer. ``direct_io`` lets the default backend move whole
        chunks past the page cache (``backend.py``).
        """
        if not 0 < gc_target < gc_threshold <= 1:
            raise ValueError("need 0 < gc_target < gc_threshold <= 1")
        self.data_dir = data_dir
        self.readonly = readonly
        if readonly and not (data_dir / "index.sqlite3").exists():
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
        self._clock = clock
        self.backend: ChunkBackend = backend or LocalBackend(
            data_dir / "blobs", direct_io=direct_io
        )
        self._mutex = threading.RLock()
        #: Counts this process's committed index changes: a value read before a
        #: query still equal afterwards means the answer is still current.
        self.generation = 0
        self._writing: Counter[str] = Counter()
        self._batch_ids = itertools.count()
        index = data_dir / INDEX_NAME
        wal_lost = crashed and index.exists() and not index.with_name(INDEX_NAME + "-wal").exists()
        self._db = self._open_index(index, deep=crashed)
        if readonly:
            return
        self._recover()
        self._check_index(wal_lost)

    def _open_index(self, path: Path, *, deep: bool) -> sqlite3.Connection:
        """Connect to the index (``index.open_index``); a damaged one is moved aside
        and a new one begun (``_check_index`` then rebuilds it from the files on disk)."""
        opened = open_index(path, readonly=self.readonly, deep=deep)
        if isinstance(opened, sqlite3.Connection):
            return opened
        if self.readonly:
            raise BlobError("io_error", f"the index {path} is damaged ({opened})")
        return self._fresh_index(path, opened)

    def _fresh_index(self, path: Path, problem: str) -> sqlite3.Connection:
        """Move a damaged index aside (kept for inspection) and begin an empty one."""
        db, notice = fresh_index(path, problem)
        self._notice(notice)
        return db

    def _check_pages(self) -> None:
        """``verify``'s check of the index itself: a damaged one is replaced and
        rebuilt from disk, as at open."""
        with self._mutex:
            problem = quick_check(self._db)
            if problem == "ok":
                return
            self._db.close()
            self._db = self._fresh_index(self.data_dir / INDEX_NAME, problem)
            self.generation += 1
        self._check_index(wal_lost=False)

    def _notice(self, text: str) -> None:
        log.warning("store %s: %s", self.data_dir, text)
        self.notices.append(text)

    def _check_index(self, wal_lost: bool) -> None:
        """Rebuild what the index lost from the files on disk, which describe
        themselves (manifests hash to their names, chunks to theirs): an index
        deleted, emptied, damaged, or missing the commits of a WAL lost in a
        crash. Nothing on disk is deleted because the index does not know it."""
        with self._mutex:
            empty = self._db.execute("SELECT 1 FROM blobs LIMIT 1").fetchone() is None
        lost = empty and any(n.endswith(MANIFEST_SUFFIX) for n in self.backend.names())
        if not (lost or wal_lost):
            return
        why = "knew no blobs" if lost else "may have lost its last commits (no WAL after a crash)"
        blobs, chunks = self._adopt(self.backend.names(), hash_chunks=False)
        if blobs or chunks or lost:
            self._notice(
                f"the index {why}: rebuilt it from disk ({blobs} blobs, {chunks} chunks "
                "taken back; their blobs are pinned, as the index no longer says which were)"
            )

    def _adopt(self, names: Iterable[str], *, hash_chunks: bool) -> tuple[int, int]:
        """Index the files among ``names`` that the index does not know: valid
        manifests become blobs (pinned: whether the user pinned them is lost;
        complete when every chunk is held at the length the manifest gives it),
        chunks are indexed at their file's size (``hash_chunks`` checks them
        first; reads re-hash anyway). A file that does not match its name is
        moved aside. Returns (blobs, chunks) adopted."""
        manifests: list[Manifest] = []
        chunks: dict[Cid, int] = {}
        for name in names:
            hexpart = name.removesuffix(MANIFEST_SUFFIX)
            cid = Cid("blake3:" + hexpart)
            if len(hexpart) != 64 or self._writing[cid] or self._referenced(name):
                continue
            if name != hexpart:
                manifest = self._adoptable_manifest(name, cid)
                if manifest is not None:
                    manifests.append(manifest)
            else:
                size = self._adoptable_chunk(name, cid, hash_chunks)
                if size is not None:
                    chunks[cid] = size
        now = self._clock()
        with self._tx() as db:
            db.executemany("INSERT OR IGNORE INTO chunks (cid, size) VALUES (?, ?)", chunks.items())
            for m in manifests:
                index_manifest(db, m, True, len(m.encoded), now, proven=False)
                db.execute(COMPLETE_IF_LENGTHS_HOLD, lengths_args(m))
        return len(manifests), len(chunks)

    def _adoptable_manifest(self, name: str, cid: Cid) -> Manifest | None:
        try:
            with self.backend.open_stream(name) as stream:
                manifest = decode_manifest(stream.read(), cid)
        except OSError:
            return None
        except BlobError:
            self.backend.move_aside(name, "corrupt")
            return None
        return manifest

    def _adoptable_chunk(self, name: str, cid: Cid, hash_it: bool) -> int | None:
        try:
            data = self.backend.load(name, MAX_CHUNK_BYTES + 1)
        except OSError:
            return None
        if len(data) > MAX_CHUNK_BYTES or (hash_it and cid_of(data) != cid):
            self.backend.move_aside(name, "corrupt")
            return None
        return len(data)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
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

    def close(self) -> None:
        with self._mutex:
            self._db.close()
        if self._lock_fd is not None:
            os.ftruncate(self._lock_fd, 0)
            os.pwrite(self._lock_fd, CLOSED_MARK, 0)
            os.close(self._lock_fd)

    def __enter__(self) -> BlobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- recovery --------------------------------------------------------------

    def _recover(self) -> None:
        """Undo what crashed batches left: files their journals name that the index lacks."""
        tmp = self.data_dir / "blobs" / LocalBackend.TMP_DIR
        for journal in sorted(tmp.glob("*.journal")):
            for name in journal.read_text(errors="replace").split():
                if not self._referenced(name):
                    self.backend.remove(name)
        for leftover in tmp.iterdir():
            if leftover.is_file():
                leftover.unlink(missing_ok=True)

    def _referenced(self, name: str) -> bool:
        if name.endswith(MANIFEST_SUFFIX):
            hexpart, table = name[: -len(MANIFEST_SUFFIX)], "blobs"
        else:
            hexpart, table = name, "chunks"
        with self._mutex:
            row = self._db.execute(
                f"SELECT 1 FROM {table} WHERE cid = ?", ("blake3:" + hexpart,)
            ).fetchone()
        return row is not None

    # -- queries ---------------------------------------------------------------

    def has(self, cid: Cid) -> bool:
        """True when the chunk, or the complete blob, with this CID is stored."""
        with self._mutex:
            row = self._db.execute(
                "SELECT 1 FROM chunks WHERE cid = ? UNION ALL "
                "SELECT 1 FROM blobs WHERE cid = ? AND complete = 1 LIMIT 1",
                (cid, cid),
            ).fetchone()
        return row is not None

    def has_chunk(self, cid: Cid) -> bool:
        return bool(self.present_chunks([cid]))

    def present_chunks(self, cids: Iterable[Cid]) -> set[Cid]:
        """Which of ``cids`` the index holds, in one query."""
        wanted = list(cids)
        found: set[Cid] = set()
        with self._mutex:
            for start in range(0, len(wanted), 500):
                part = wanted[start : start + 500]
                marks = ",".join("?" * len(part))
                rows = self._db.execute(f"SELECT cid FROM chunks WHERE cid IN ({marks})", part)
                found.update(Cid(row[0]) for row in rows)
        return found

    def has_blob(self, cid: Cid) -> bool:
        """True only when the manifest and every chunk are committed."""
        with self._mutex:
            row = self._db.execute("SELECT complete FROM blobs WHERE cid = ?", (cid,)).fetchone()
        return row is not None and row[0] == 1

    def stat(self, cid: Cid) -> BlobInfo:
        with self._mutex:
            row = self._db.execute(
                "SELECT cid, size, chunk_count, content, name, mime, pinned, complete, added_at, "
                "last_access FROM blobs WHERE cid = ?",
                (cid,),
            ).fetchone()
        if row is None:
            raise BlobError("not_found", cid)
        return _blob_info(row)

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
        lower = max(prefix, after)
        sql = (
            "SELECT cid, size, chunk_count, content, name, mime, pinned, complete, added_at, "
            "last_access FROM blobs WHERE cid >= ? AND cid < ? AND cid != ?"
        )
        if complete_only:
            sql += " AND complete = 1"
        sql += " ORDER BY cid LIMIT ?"
        with self._mutex:
            rows = self._db.execute(sql, (lower, upper, after, -1 if limit is None else limit))
            return [_blob_info(r) for r in rows.fetchall()]

    def count(self) -> int:
        """Complete blobs held."""
        with self._mutex:
            return int(
                self._db.execute("SELECT COUNT(*) FROM blobs WHERE complete = 1").fetchone()[0]
            )

    def total_bytes(self) -> int:
        """Bytes of chunks and manifests held (shared chunks counted once)."""
        with self._mutex:
            chunks = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM chunks").fetchone()[0]
            manifests = self._db.execute(
                "SELECT COALESCE(SUM(manifest_bytes), 0) FROM blobs"
            ).fetchone()[0]
        return int(chunks) + int(manifests)

    def missing_chunks(self, cid: Cid) -> list[int]:
        """Indices of the blob's chunks not yet stored (its manifest must be known)."""
        with self._mutex:
            if self._db.execute("SELECT 1 FROM blobs WHERE cid = ?", (cid,)).fetchone() is None:
                raise BlobError("not_found", cid)
            rows = self._db.execute(
                "SELECT bc.idx FROM blob_chunks bc LEFT JOIN chunks c ON c.cid = bc.chunk "
                "WHERE bc.blob = ? AND c.cid IS NULL ORDER BY bc.idx",
                (cid,),
            ).fetchall()
        return [r[0] for r in rows]

    # -- reads -----------------------------------------------------------------

    def read_manifest(self, cid: Cid) -> Manifest:
        """The blob's manifest, verified against its CID (complete or partial blob)."""
        info = self.stat(cid)
        name = hex_of(cid) + MANIFEST_SUFFIX
        try:
            with self.backend.open_stream(name) as stream:
                data = stream.read()
        except FileNotFoundError:
            data = b""
        except OSError as exc:
            raise BlobError("io_error", f"{name}: {exc.strerror}") from None
        try:
            manifest = decode_manifest(data, cid)
        except BlobError:
            manifest = self._restore_manifest(cid, name, bool(data))
        self._touch(cid)
        return Manifest(
            manifest.size,
            manifest.chunk_size,
            manifest.chunks,
            manifest.content,
            info.name,
            info.mime,
        )

    def read_chunk(self, cid: Cid) -> bytes:
        """The chunk's bytes, re-hashed; a corrupt file is moved aside and not served."""
        with self._mutex:
            row = self._db.execute("SELECT size FROM chunks WHERE cid = ?", (cid,)).fetchone()
        if row is None:
            raise BlobError("not_found", cid)
        return bytes(self._read_verified(cid, row[0]))

    def read_chunks(self, manifest: Manifest, indices: list[int]) -> list[bytes]:
        """Chunks of a blob by index, each re-hashed; sizes come from the manifest,
        so a run of chunks costs no index lookups."""
        return [
            bytes(self._read_verified(manifest.chunks[i], manifest.chunk_length(i)))
            for i in indices
        ]

    def read_blob_stream(
        self, cid: Cid, start: int = 0, end: int | None = None
    ) -> Iterator[memoryview]:
        """Yield the blob's bytes [start, end) in order, each chunk verified.

        The whole blob must be complete; a range needs only the chunks covering
        it (a range fetch leaves the rest missing). ``READ_AHEAD`` threads read
        and hash the next chunks while the caller writes this one out: a direct
        read waits on the disk, and several waits overlap.
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

    def _read_verified(self, cid: Cid, size: int) -> memoryview:
        """The chunk's ``size`` bytes, re-hashed, as a view valid until this thread's
        next read."""
        name = hex_of(cid)
        try:
            data = self.backend.load(name, size + 1)  # one byte more shows a long file
        except FileNotFoundError:
            if self.has_chunk(cid):
                self._drop_chunk(cid, name, "missing")
            raise BlobError("not_found", f"{cid}: chunk file missing") from None
        except OSError as exc:
            raise BlobError("io_error", f"{cid}: {exc.strerror}") from None
        if len(data) != size or cid_of(data) != cid:
            held = self._chunk_size(cid)
            if held is None:  # removed while being read: its file is reused
                raise BlobError("not_found", f"{cid}: removed")
            if held != size and self._matches_own_cid(cid, name, held):
                # The caller's length came from a manifest that lies about this
                # chunk: the manifest is false, the chunk is good (issue 13 item 1).
                raise BlobError(
                    "manifest_invalid", f"{cid}: holds {held} bytes, the manifest says {size}"
                )
            where = self._drop_chunk(cid, name, "corrupt")
            raise BlobError("hash_mismatch", f"{cid}: corrupt on disk, moved to {where}")
        return data

    def _chunk_size(self, cid: Cid) -> int | None:
        with self._mutex:
            row = self._db.execute("SELECT size FROM chunks WHERE cid = ?", (cid,)).fetchone()
        return None if row is None else int(row[0])

    def _matches_own_cid(self, cid: Cid, name: str, size: int) -> bool:
        try:
            data = self.backend.load(name, size + 1)
        except OSError:
            return False
        return len(data) == size and cid_of(data) == cid

    def _drop_chunk(self, cid: Cid, name: str, reason: str) -> str:
        if self.readonly:
            return "(left in place: store opened read-only)"
        where = self.backend.move_aside(name, reason) if reason == "corrupt" else ""
        with self._tx() as db:
            db.execute("DELETE FROM chunks WHERE cid = ?", (cid,))
            db.execute(
                "UPDATE blobs SET complete = 0 WHERE cid IN "
                "(SELECT blob FROM blob_chunks WHERE chunk = ?)",
                (cid,),
            )
        return where

    def _restore_manifest(self, cid: Cid, name: str, was_present: bool) -> Manifest:
        """Rebuild a lost or corrupt manifest file from the index, if it still hashes right."""
        with self._mutex:
            size, chunk_size, content = self._db.execute(
                "SELECT size, chunk_size, content FROM blobs WHERE cid = ?", (cid,)
            ).fetchone()
            chunks = tuple(
                r[0]
                for r in self._db.execute(
                    "SELECT chunk FROM blob_chunks WHERE blob = ? ORDER BY idx", (cid,)
                )
            )
        manifest = Manifest(size, chunk_size, chunks, content)
        if manifest.cid != cid:
            raise BlobError("manifest_invalid", f"{cid}: index entry does not match its CID")
        if self.readonly:
            return manifest
        if was_present:
            self.backend.move_aside(name, "corrupt")
        self.backend.add(name, manifest.encode(), f"restore-{os.getpid()}")
        self.backend.flush()
        return manifest

    def _touch(self, cid: Cid) -> None:
        if self.readonly:
            return
        with self._mutex:
            self._db.execute("UPDATE blobs SET last_access = ? WHERE cid = ?", (self._clock(), cid))

    # -- writes ----------------------------------------------------------------

    def batch(self) -> WriteBatch:
        """A group of writes made durable and visible together (use as a context manager)."""
        if self.readonly:
            raise BlobError("io_error", "store opened read-only")
        return WriteBatch(self, f"b{os.getpid()}-{next(self._batch_ids)}")

    def write_chunk(self, cid: Cid, data: Buffer) -> None:
        """Verify and store one chunk; a no-op when already present."""
        with self.batch() as batch:
            batch.write_chunk(cid, data)

    def write_blob(self, manifest: Manifest, chunks: Iterable[Buffer], *, pin: bool = False) -> Cid:
        """Store a blob from its manifest and chunks in order (each verified)."""
        check_manifest(manifest)
        content = blake3.blake3()
        with self.batch() as batch:
            count = 0
            for index, data in enumerate(chunks):
                if index >= len(manifest.chunks):
                    raise BlobError("manifest_invalid", "more chunks than the manifest lists")
                batch.write_verified_chunk(check_chunk(manifest, index, data), data)
                content.update(data)
                count += 1
            if count != len(manifest.chunks):
                raise BlobError("manifest_invalid", "fewer chunks than the manifest lists")
            if cid_from_digest(content.digest()) != manifest.content:
                raise BlobError("manifest_invalid", "content is not the BLAKE3 of the chunks")
            batch.write_manifest(manifest, pin=pin, proven=True)
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
    ) -> Manifest:
        """Chunk, hash and store a stream in one pass; memory stays at one chunk.

        With ``batch`` the blob becomes durable and visible when that batch
        commits (many small files, one flush); otherwise before this returns.
        """
        if batch is None:
            with self.batch() as own:
                return self.add_stream(
                    stream, name=name, mime=mime, pin=pin, progress=progress, batch=own
                )
        builder = ManifestBuilder()
        for view in iter_chunks(stream):
            batch.write_verified_chunk(builder.add(view), view)
            if progress is not None:
                progress(len(view))
        manifest = builder.finish(name, mime)
        batch.write_manifest(manifest, pin=pin, proven=True)
        return manifest

    def add_bytes(self, data: bytes, *, name: str | None = None, pin: bool = False) -> Manifest:
        import io

        return self.add_stream(io.BytesIO(data), name=name, pin=pin)

    def begin_blob(self, manifest: Manifest) -> None:
        """Record a manifest whose chunks will arrive later (a fetch, a put); resumable.

        Refused (``manifest_invalid``, nothing recorded) when the manifest breaks
        DESIGN.md section 5 in a way visible now: a wrong chunk size or count, or
        a chunk held here whose length is not the one the manifest gives it.
        """
        check_manifest(manifest)
        held = self._held_sizes(manifest.chunks)
        for index, chunk in enumerate(manifest.chunks):
            size = held.get(chunk)
            if size is not None and size != manifest.chunk_length(index):
                raise BlobError(
                    "manifest_invalid",
                    f"chunk {index} holds {size} bytes, the manifest gives it "
                    f"{manifest.chunk_length(index)}",
                )
        with self.batch() as batch:
            batch.write_manifest(manifest, pin=False)

    def _held_sizes(self, cids: Iterable[Cid]) -> dict[Cid, int]:
        wanted = list(dict.fromkeys(cids))
        found: dict[Cid, int] = {}
        with self._mutex:
            for start in range(0, len(wanted), 500):
                part = wanted[start : start + 500]
                marks = ",".join("?" * len(part))
                rows = self._db.execute(
                    f"SELECT cid, size FROM chunks WHERE cid IN ({marks})", part
                )
                found.update((Cid(c), int(n)) for c, n in rows)
        return found

    def complete_blob(self, cid: Cid) -> bool:
        """Make a blob complete if every chunk is stored and its manifest holds;
        returns whether it is complete.

        Before the blob becomes visible, its ``content`` is checked against the
        BLAKE3 of the whole bytes (DESIGN.md section 5): the blob CID proves only
        the manifest's bytes, not that they describe these chunks. A manifest that
        fails is ``manifest_invalid`` and nothing of it is kept (its chunks stay
        only where another blob uses them).
        """
        if self.has_blob(cid):
            return True
        if self.missing_chunks(cid):
            return False
        manifest = self.read_manifest(cid)
        try:
            check_manifest(manifest)
            self._check_content(manifest)
        except BlobError as exc:
            if exc.code != "manifest_invalid":
                raise
            self._delete_blobs([cid])
            raise
        with self._tx() as db:
            db.execute("UPDATE blobs SET complete = 1 WHERE cid = ?", (cid,))
        return True

    def _check_content(self, manifest: Manifest) -> None:
        """Hash the blob's bytes as stored (each chunk verified, lengths from the
        manifest) and compare with its ``content``."""
        content = blake3.blake3()
        for view in self._stream(manifest, 0, manifest.size):
            content.update(view)
        if cid_from_digest(content.digest()) != manifest.content:
            raise BlobError(
                "manifest_invalid", f"{manifest.cid}: content is not the BLAKE3 of its bytes"
            )

    def discard_partial(self, cid: Cid) -> None:
        """Forget a blob that is not complete (a put whose manifest proved false)."""
        with self._mutex:
            row = self._db.execute("SELECT complete FROM blobs WHERE cid = ?", (cid,)).fetchone()
        if row is not None and row[0] == 0:
            self._delete_blobs([cid])

    # -- pins, removal, GC -----------------------------------------------------

    def pin(self, cid: Cid) -> None:
        self._set_pin(cid, True)

    def unpin(self, cid: Cid) -> None:
        self._set_pin(cid, False)

    def is_pinned(self, cid: Cid) -> bool:
        return self.stat(cid).pinned

    def _set_pin(self, cid: Cid, pinned: bool) -> None:
        with self._mutex:
            cur = self._db.execute("UPDATE blobs SET pinned = ? WHERE cid = ?", (int(pinned), cid))
        if cur.rowcount == 0:
            raise BlobError("not_found", cid)

    def remove(self, cid: Cid, *, force: bool = False) -> int:
        """Remove a blob now; chunks go when no other blob uses them. Returns bytes freed."""
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
        use goes. Chunks no blob references (leftovers of abandoned writes)
        always go. The report names every blob evicted (each an event)."""
        freed = self._delete_orphan_chunks()
        to_free = float("inf") if everything else self.bytes_to_free()
        removed: list[Cid] = []
        while to_free > 0:
            victims = self._pick_victims(to_free, everything)
            if not victims:
                break
            gained = self._delete_blobs(victims)
            removed += victims
            freed += gained
            to_free -= gained
        return GcReport(tuple(removed), freed)

    def _pick_victims(self, to_free: float, everything: bool) -> list[Cid]:
        """The next blobs to evict (``gc.pick_victims``), never one in use."""
        with self._mutex:
            return pick_victims(self._db, list(self._in_use), to_free, everything)

    def _delete_orphan_chunks(self) -> int:
        with self._mutex:
            rows = self._db.execute(
                "SELECT cid, size FROM chunks c WHERE NOT EXISTS "
                "(SELECT 1 FROM blob_chunks bc WHERE bc.chunk = c.cid)"
            ).fetchall()
            rows = [(cid, size) for cid, size in rows if self._writing[cid] == 0]
        if rows:
            self._delete_files([hex_of(cid) for cid, _ in rows], chunks=[c for c, _ in rows])
        return sum(size for _, size in rows)

    def _delete_blobs(self, cids: list[Cid]) -> int:
        """Drop blobs from the index, then their files and the chunks only they used."""
        with self._mutex:
            db = self._db
            db.execute("CREATE TEMP TABLE IF NOT EXISTS doomed (cid TEXT PRIMARY KEY)")
            db.execute("DELETE FROM doomed")
            db.executemany("INSERT OR IGNORE INTO doomed (cid) VALUES (?)", ((c,) for c in cids))
            manifests = db.execute(
                "SELECT cid, manifest_bytes FROM blobs WHERE cid IN (SELECT cid FROM doomed)"
            ).fetchall()
            chunks = db.execute(
                "SELECT DISTINCT bc.chunk, c.size FROM blob_chunks bc JOIN chunks c "
                "ON c.cid = bc.chunk WHERE bc.blob IN (SELECT cid FROM doomed) AND NOT EXISTS "
                "(SELECT 1 FROM blob_chunks o WHERE o.chunk = bc.chunk "
                "AND o.blob NOT IN (SELECT cid FROM doomed))"
            ).fetchall()
            dead = [(c, size) for c, size in chunks if self._writing[c] == 0]
            names = [hex_of(c) + MANIFEST_SUFFIX for c, _ in manifests]
            names += [hex_of(c) for c, _ in dead]
            self._delete_files(names, chunks=[c for c, _ in dead], blobs=[c for c, _ in manifests])
        return int(sum(b for _, b in manifests) + sum(size for _, size in dead))

    def _delete_files(
        self, names: list[str], *, chunks: list[Cid], blobs: list[Cid] | None = None
    ) -> None:
        journal = Journal(self.data_dir, f"d{os.getpid()}-{next(self._batch_ids)}")
        journal.note_all(names)
        with self._tx() as db:
            db.executemany("DELETE FROM blob_chunks WHERE blob = ?", [(c,) for c in blobs or ()])
            db.executemany("DELETE FROM blobs WHERE cid = ?", [(c,) for c in blobs or ()])
            db.executemany("DELETE FROM chunks WHERE cid = ?", [(c,) for c in chunks])
        for name in names:
            self.backend.remove(name)
        journal.discard()

    # -- verify ----------------------------------------------------------------

    def verify(self, progress: Callable[[int], None] | None = None) -> VerifyReport:
        """Re-hash every file; move corrupt ones aside and name the blobs they
        belonged to; take back files the index does not know (never delete them)."""
        report = VerifyReport()
        self._check_pages()
        blobs, chunks = self._adopt(self.backend.names(), hash_chunks=True)
        report.adopted = blobs + chunks
        with self._mutex:
            chunk_rows = self._db.execute("SELECT cid, size FROM chunks").fetchall()
            blob_cids = [r[0] for r in self._db.execute("SELECT cid FROM blobs")]
        for cid, size in chunk_rows:
            report.chunks_checked += 1
            try:
                self._read_verified(cid, size)
            except BlobError as exc:
                (report.missing if exc.code == "not_found" else report.corrupt).append(
                    f"chunk {cid}: {exc.detail}"
                )
                report.affected += self._blobs_using(cid)
            if progress is not None:
                progress(size)
        for cid in blob_cids:
            report.manifests_checked += 1
            self._verify_manifest(cid, report)
        report.affected = sorted(set(report.affected))
        return report

    def _blobs_using(self, chunk: Cid) -> list[Cid]:
        with self._mutex:
            rows = self._db.execute("SELECT blob FROM blob_chunks WHERE chunk = ?", (chunk,))
            return [Cid(r[0]) for r in rows]

    def _verify_manifest(self, cid: Cid, report: VerifyReport) -> None:
        name = hex_of(cid) + MANIFEST_SUFFIX
        try:
            with self.backend.open_stream(name) as stream:
                data = stream.read()
        except FileNotFoundError:
            data = b""
        if data and cid_of(data) == cid:
            return
        try:
            self._restore_manifest(cid, name, bool(data))
            report.manifests_restored += 1
        except BlobError as exc:
            report.corrupt.append(f"manifest {cid}: {exc.detail}")


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


def _blob_info(row: tuple[Any, ...]) -> BlobInfo:
    cid, size, count, content, name, mime, pinned, complete, added, access = row
    return BlobInfo(
        cid, size, count, content, name, mime, bool(pinned), bool(complete), added, access
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
