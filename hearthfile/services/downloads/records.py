"""Download records on disk: ``<data>/downloads.sqlite3`` (SQLite, WAL; blocking).

One row per download, keyed by id, with the URL unique (the same URL again is
the same download). Rows are written on every status change and at every
flush of a running download, each in its own transaction with
``synchronous=FULL``, so a record survives ``kill -9`` of the daemon in the
state it had at its last flush. Callers run these methods in a worker thread.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any, Final

from hearthfile.services.downloads.core import Record, Source, Status, Validator

FILE_NAME: Final = "downloads.sqlite3"
SCHEMA_VERSION: Final = 1

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS downloads (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    downloaded_bytes INTEGER NOT NULL,
    size INTEGER,
    cid TEXT,
    error TEXT,
    source TEXT NOT NULL,
    expect TEXT,
    mime TEXT,
    etag TEXT,
    last_modified TEXT,
    partial_cid TEXT,
    refresh INTEGER NOT NULL
)
"""
_COLUMNS: Final = (
    "id",
    "url",
    "name",
    "status",
    "created_at",
    "updated_at",
    "downloaded_bytes",
    "size",
    "cid",
    "error",
    "source",
    "expect",
    "mime",
    "etag",
    "last_modified",
    "partial_cid",
    "refresh",
)


class RecordBook:
    """The downloads table; safe to call from several worker threads."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / FILE_NAME
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def all(self) -> list[Record]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM downloads ORDER BY created_at, id"
            ).fetchall()
        return [_record(row) for row in rows]

    def save(self, rec: Record) -> None:
        row = _row(rec)
        marks = ", ".join("?" * len(_COLUMNS))
        with self._lock:
            self._db.execute(
                f"INSERT OR REPLACE INTO downloads ({', '.join(_COLUMNS)}) VALUES ({marks})", row
            )

    def delete(self, id_: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM downloads WHERE id = ?", (id_,))


def _row(rec: Record) -> tuple[Any, ...]:
    return (
        rec.id,
        rec.url,
        rec.name,
        rec.status.value,
        rec.created_at,
        rec.updated_at,
        rec.downloaded_bytes,
        rec.size,
        rec.cid,
        rec.error,
        rec.source.value,
        rec.expect,
        rec.mime,
        rec.validator.etag,
        rec.validator.last_modified,
        rec.partial_cid,
        int(rec.refresh),
    )


def _record(row: tuple[Any, ...]) -> Record:
    v = dict(zip(_COLUMNS, row, strict=True))
    return Record(
        id=v["id"],
        url=v["url"],
        name=v["name"],
        status=Status(v["status"]),
        created_at=v["created_at"],
        updated_at=v["updated_at"],
        downloaded_bytes=v["downloaded_bytes"],
        size=v["size"],
        cid=v["cid"],
        error=v["error"],
        source=Source(v["source"]),
        expect=v["expect"],
        mime=v["mime"],
        validator=Validator(v["etag"], v["last_modified"]),
        partial_cid=v["partial_cid"],
        refresh=bool(v["refresh"]),
    )
