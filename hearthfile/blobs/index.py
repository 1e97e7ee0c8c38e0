"""The store's SQLite index: schema, versions and migrations, opening.

Ring: blobs (layer 1, blocking). Owns the index file (``index.sqlite3``, WAL)
and its schema, and writes blobs' rows (``index_blobs``, for the store and for
recovery); ``store.py`` owns the connection once open and the lock around it.

The index answers has/list/stat/GC without touching the disk. It holds each
blob's manifest fields, name, mime, pin, how it came and last access
(``blobs``); each blob's chunk list, which is also the chunk-location index
(``blob_chunks``, looked up by chunk); the chunks a partial blob holds (its
have-map, ``have``); and chunks uploaded ahead of their manifest (``loose``).

The schema's version is SQLite's ``user_version``. Opening an index of an
older version runs the migrations from it in one transaction each; an index of
a newer version than this code knows is refused rather than misread. Version 1
(one file per chunk) migrates to version 2 by moving its rows and noting every
blob in ``v1_pending``; ``convert.py`` then copies the bytes, resumably.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Final

from hearthfile.blobs.chunker import BlobError, Manifest

INDEX_NAME: Final = "index.sqlite3"
SCHEMA_VERSION: Final = 2

SCHEMA_V2: Final = """
CREATE TABLE blobs (
    cid TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    chunk_size INTEGER NOT NULL,
    chunk_count INTEGER NOT NULL,
    content TEXT NOT NULL,
    name TEXT,
    mime TEXT,
    pinned INTEGER NOT NULL DEFAULT 0,
    origin TEXT NOT NULL DEFAULT 'added',
    complete INTEGER NOT NULL DEFAULT 0,
    added_at REAL NOT NULL,
    last_access REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX blobs_lru ON blobs (pinned, last_access);
CREATE TABLE blob_chunks (
    blob TEXT NOT NULL,
    idx INTEGER NOT NULL,
    chunk TEXT NOT NULL,
    PRIMARY KEY (blob, idx)
) WITHOUT ROWID;
CREATE INDEX blob_chunks_by_chunk ON blob_chunks (chunk);
CREATE TABLE have (
    blob TEXT NOT NULL,
    idx INTEGER NOT NULL,
    PRIMARY KEY (blob, idx)
) WITHOUT ROWID;
CREATE TABLE loose (
    cid TEXT PRIMARY KEY,
    data BLOB NOT NULL,
    added_at REAL NOT NULL
);
"""

#: Version 1 -> 2: blob rows move over as partial blobs (pinned ones as added, the
#: rest as fetched); each is noted in ``v1_pending`` with whether it was complete,
#: and ``convert.py`` copies its chunk files into its version 2 file.
MIGRATE_V1_V2: Final = (
    """
DROP INDEX IF EXISTS blobs_lru;
ALTER TABLE blobs RENAME TO v1_blobs;
DROP TABLE IF EXISTS chunks;
"""
    + SCHEMA_V2.replace(
        "CREATE TABLE blob_chunks", "CREATE TABLE IF NOT EXISTS blob_chunks"
    ).replace(
        "CREATE INDEX blob_chunks_by_chunk", "CREATE INDEX IF NOT EXISTS blob_chunks_by_chunk"
    )
    + """
INSERT INTO blobs (cid, size, chunk_size, chunk_count, content, name, mime, pinned, origin,
                   complete, added_at, last_access)
    SELECT cid, size, chunk_size, chunk_count, content, name, mime, pinned,
           CASE WHEN pinned THEN 'added' ELSE 'fetched' END, 0, added_at, last_access
    FROM v1_blobs;
CREATE TABLE v1_pending (cid TEXT PRIMARY KEY, was_complete INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO v1_pending SELECT cid, complete FROM v1_blobs;
DROP TABLE v1_blobs;
"""
)

#: From each version, the script that brings an index to the next one.
MIGRATIONS: Final[dict[int, str]] = {1: MIGRATE_V1_V2}


def _version(db: sqlite3.Connection) -> int:
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version == 0:  # version 1 predates user_version; an empty file is new
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        version = 1 if "blobs" in tables else 0
    return version


def migrate(db: sqlite3.Connection) -> int:
    """Bring the index to ``SCHEMA_VERSION``; returns the version it had."""
    found = _version(db)
    if found > SCHEMA_VERSION:
        raise BlobError(
            "io_error",
            f"the store was written by a newer hearthfile (index version {found}, "
            f"this one knows {SCHEMA_VERSION})",
        )
    version = found
    if version == 0:
        _run(db, SCHEMA_V2, SCHEMA_VERSION)
        return found
    while version < SCHEMA_VERSION:
        _run(db, MIGRATIONS[version], version + 1)
        version += 1
    return found


def _run(db: sqlite3.Connection, script: str, version: int) -> None:
    """One migration step in one transaction (SQLite's DDL is transactional)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for statement in script.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {version}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _begin(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")


def open_index(
    path: Path, *, readonly: bool, deep: bool, on_migrate: Callable[[int], None] = lambda v: None
) -> sqlite3.Connection | str:
    """Connect to the index (migrated), or return what is wrong with it (closed).

    A damaged header or schema shows at once. ``deep`` (after a crash) also
    runs SQLite's ``quick_check`` over every page: about 0.3 s on 100,000
    blobs, too dear for every CLI call; ``verify`` runs it too."""
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        if readonly:
            if _version(db) != SCHEMA_VERSION:
                raise BlobError("io_error", "the store is being converted; ask its node")
            db.execute("SELECT 1 FROM blobs LIMIT 1")
            return db
        _begin(db)
        found = migrate(db)
        if found not in (0, SCHEMA_VERSION):
            on_migrate(found)
        db.execute("SELECT 1 FROM blobs LIMIT 1").fetchone()
        problem = db.execute("PRAGMA quick_check(1)").fetchone()[0] if deep else "ok"
        if problem == "ok":
            return db
    except sqlite3.DatabaseError as exc:
        problem = str(exc)
    except BlobError:
        db.close()
        raise
    db.close()
    return str(problem)


def quick_check(db: sqlite3.Connection) -> str:
    """SQLite's check of every page: ``"ok"`` or the first problem found."""
    try:
        return str(db.execute("PRAGMA quick_check(1)").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        return str(exc)


def fresh_index(path: Path, problem: str) -> tuple[sqlite3.Connection, str]:
    """Move a damaged index aside (kept for inspection) and begin an empty one;
    returns it and the notice saying so."""
    aside = path.with_name(f"{INDEX_NAME}.damaged.{int(time.time())}")
    for suffix in ("", "-wal", "-shm"):
        with suppress(FileNotFoundError):
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    problem = " ".join(problem.replace("*** in database main ***", "").split())
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    _begin(db)
    migrate(db)
    return db, f"the index was damaged ({problem}); moved it to {aside.name}"


def index_blob(
    db: sqlite3.Connection, m: Manifest, *, pin: bool, origin: str, now: float, complete: bool
) -> None:
    """A blob's row and chunk list (``index_blobs`` of one)."""
    index_blobs(db, [(m, pin, origin)], now=now, complete=complete)


def index_blobs(
    db: sqlite3.Connection,
    blobs: Sequence[tuple[Manifest, bool, str]],
    *,
    now: float,
    complete: bool,
) -> None:
    """Blobs' rows and chunk lists, three statements for them all; an existing row
    keeps its state unless this one is complete, takes a name and mime it lacked,
    and keeps any pin."""
    db.executemany(
        "INSERT INTO blobs (cid, size, chunk_size, chunk_count, content, name, mime, pinned, "
        "origin, complete, added_at, last_access) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
        "ON CONFLICT(cid) DO UPDATE SET name = COALESCE(excluded.name, name), "
        "mime = COALESCE(excluded.mime, mime), pinned = MAX(pinned, excluded.pinned), "
        "complete = MAX(complete, excluded.complete), last_access = excluded.last_access",
        [
            (m.cid, m.size, m.chunk_size, len(m.chunks), m.content, m.name, m.mime, int(pin),
             origin, int(complete), now, now)
            for m, pin, origin in blobs
        ],
    )  # fmt: skip
    db.executemany(
        "INSERT OR IGNORE INTO blob_chunks (blob, idx, chunk) VALUES (?, ?, ?)",
        ((m.cid, i, c) for m, _, _ in blobs for i, c in enumerate(m.chunks)),
    )
    if complete:
        db.executemany("DELETE FROM have WHERE blob = ?", ((m.cid,) for m, _, _ in blobs))
