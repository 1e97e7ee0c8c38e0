"""Small blobs' bytes, kept in one SQLite file instead of a file each.

Ring: blobs (layer 1, blocking). A blob of at most ``INLINE_MAX`` bytes costs a
row here rather than a file: adding 20,000 files of 4 KiB makes no inode, and
evicting them is one statement (BENCHMARKS.md, store). The rows live in their
own file (``small.sqlite3``), not in the index, so an index lost or damaged
loses none of them: each row names its blob and is rebuilt from its bytes like
any blob file. The store commits a row here before the index names it, and
deletes it after the index stopped naming it (``store.py``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final

#: The largest blob kept here rather than in a file of its own.
INLINE_MAX: Final = 16 * 1024
PACK_NAME: Final = "small.sqlite3"


class Pack:
    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        if readonly:  # a reader beside the writer never creates the file
            uri = f"file:{path}?mode=ro" if path.exists() else "file::memory:"
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            return
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        if not readonly:
            # Rows of up to 16 KiB fit whole in 64 KiB pages: a row costs no overflow
            # chain, and deleting many touches few pages (set before the first table).
            self._db.execute("PRAGMA page_size=65536")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS small (cid TEXT PRIMARY KEY, data BLOB NOT NULL)"
            )

    def close(self) -> None:
        self._db.close()

    def get(self, cid: str) -> bytes | None:
        try:
            row = self._db.execute("SELECT data FROM small WHERE cid = ?", (cid,)).fetchone()
        except sqlite3.OperationalError:  # a read-only view of a store that has none yet
            return None
        return None if row is None else bytes(row[0])

    def put_many(self, rows: Iterable[tuple[str, bytes]]) -> None:
        """Store rows durably, in one transaction."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany("INSERT OR REPLACE INTO small (cid, data) VALUES (?, ?)", rows)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def delete_many(self, cids: Iterable[str]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            wanted = list(cids)
            for start in range(0, len(wanted), 500):
                part = wanted[start : start + 500]
                marks = ",".join("?" * len(part))
                self._db.execute(f"DELETE FROM small WHERE cid IN ({marks})", part)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def cids(self) -> Iterator[str]:
        """Every blob held (a full listing: for rebuilds and ``verify``)."""
        try:
            yield from (r[0] for r in self._db.execute("SELECT cid FROM small").fetchall())
        except sqlite3.OperationalError:
            return
