"""The store's SQLite index: schema, opening, and the rows a manifest makes.

Ring: blobs (layer 1, blocking). Owns the index file (``index.sqlite3``, WAL) and
its schema; ``store.py`` owns the connection once open and the lock around it.

The index answers has/list/stat/GC without touching the disk. It holds the
chunks present (``chunks``), each blob's manifest fields and chunk list
(``blobs``, ``blob_chunks``), pins and last access. A chunk's reference count is
the number of ``blob_chunks`` rows naming it, read through an index, so it can
never drift from the chunk lists it counts. The schema has no version yet
(``CREATE ... IF NOT EXISTS`` only); a damaged index is moved aside here and
rebuilt from the files on disk by the store.
"""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import suppress
from pathlib import Path
from typing import Final

from hearthfile.blobs.chunker import Manifest

INDEX_NAME: Final = "index.sqlite3"

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS chunks (
    cid TEXT PRIMARY KEY,
    size INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blobs (
    cid TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    chunk_size INTEGER NOT NULL,
    chunk_count INTEGER NOT NULL,
    content TEXT NOT NULL,
    manifest_bytes INTEGER NOT NULL,
    name TEXT,
    mime TEXT,
    pinned INTEGER NOT NULL DEFAULT 0,
    complete INTEGER NOT NULL,
    added_at REAL NOT NULL,
    last_access REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blobs_lru ON blobs (pinned, last_access);
CREATE TABLE IF NOT EXISTS blob_chunks (
    blob TEXT NOT NULL,
    idx INTEGER NOT NULL,
    chunk TEXT NOT NULL,
    PRIMARY KEY (blob, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blob_chunks_by_chunk ON blob_chunks (chunk);
"""


def _begin(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(SCHEMA)


def open_index(path: Path, *, readonly: bool, deep: bool) -> sqlite3.Connection | str:
    """Connect to the index, or return what is wrong with it (the connection closed).

    A damaged header or schema shows at once. ``deep`` (after a crash) also
    runs SQLite's ``quick_check`` over every page: about 0.3 s on 100,000
    blobs, too dear for every CLI call; ``verify`` runs it too."""
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        if readonly:
            db.execute("SELECT 1 FROM blobs LIMIT 1")
            return db
        _begin(db)
        db.execute("SELECT 1 FROM blobs LIMIT 1").fetchone()
        problem = db.execute("PRAGMA quick_check(1)").fetchone()[0] if deep else "ok"
        if problem == "ok":
            return db
    except sqlite3.DatabaseError as exc:
        problem = str(exc)
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
    return db, f"the index was damaged ({problem}); moved it to {aside.name}"


def index_manifest(
    db: sqlite3.Connection,
    m: Manifest,
    pin: bool,
    encoded_len: int,
    now: float,
    proven: bool,
) -> None:
    """Record a blob and its chunk list; with ``proven`` (the manifest was built from
    or checked against the bytes), complete it when every chunk is held."""
    cid = m.cid
    db.execute(
        "INSERT INTO blobs (cid, size, chunk_size, chunk_count, content, manifest_bytes, name, "
        "mime, pinned, complete, added_at, last_access) VALUES (?,?,?,?,?,?,?,?,?,0,?,?) "
        "ON CONFLICT(cid) DO UPDATE SET name = COALESCE(excluded.name, name), "
        "mime = COALESCE(excluded.mime, mime), pinned = MAX(pinned, excluded.pinned), "
        "last_access = excluded.last_access",
        (
            cid,
            m.size,
            m.chunk_size,
            len(m.chunks),
            m.content,
            encoded_len,
            m.name,
            m.mime,
            int(pin),
            now,
            now,
        ),
    )
    db.executemany(
        "INSERT OR IGNORE INTO blob_chunks (blob, idx, chunk) VALUES (?, ?, ?)",
        ((cid, i, c) for i, c in enumerate(m.chunks)),
    )
    if not proven:
        return
    db.execute(
        "UPDATE blobs SET complete = 1 WHERE cid = ? AND NOT EXISTS (SELECT 1 FROM blob_chunks "
        "bc LEFT JOIN chunks c ON c.cid = bc.chunk WHERE bc.blob = ? AND c.cid IS NULL)",
        (cid, cid),
    )


#: Complete a blob (arguments from ``lengths_args``) when every chunk is held at
#: the length its manifest gives it: for blobs rebuilt from disk.
COMPLETE_IF_LENGTHS_HOLD: Final = (
    "UPDATE blobs SET complete = 1 WHERE cid = :cid AND NOT EXISTS (SELECT 1 FROM blob_chunks "
    "bc LEFT JOIN chunks c ON c.cid = bc.chunk WHERE bc.blob = :cid AND (c.cid IS NULL OR "
    "c.size != CASE WHEN bc.idx = :last THEN :tail ELSE :chunk_size END))"
)


def lengths_args(m: Manifest) -> dict[str, object]:
    last = len(m.chunks) - 1
    return {
        "cid": m.cid,
        "last": last,
        "tail": m.chunk_length(last) if last >= 0 else 0,
        "chunk_size": m.chunk_size,
    }

