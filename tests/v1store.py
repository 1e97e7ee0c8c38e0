"""A version 1 store (one file per chunk) written the way that layout wrote it, for
the conversion tests: chunk files ``blobs/<aa>/<62 hex>``, manifest files
``blobs/<aa>/<62 hex>.manifest``, and the version 1 index (no ``user_version``)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from hearthfile.blobs.chunker import Manifest, chunk_blob
from hearthfile.cids import Cid, hex_of

V1_SCHEMA = """
CREATE TABLE chunks (cid TEXT PRIMARY KEY, size INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE blobs (
    cid TEXT PRIMARY KEY, size INTEGER NOT NULL, chunk_size INTEGER NOT NULL,
    chunk_count INTEGER NOT NULL, content TEXT NOT NULL, manifest_bytes INTEGER NOT NULL,
    name TEXT, mime TEXT, pinned INTEGER NOT NULL DEFAULT 0, complete INTEGER NOT NULL,
    added_at REAL NOT NULL, last_access REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX blobs_lru ON blobs (pinned, last_access);
CREATE TABLE blob_chunks (
    blob TEXT NOT NULL, idx INTEGER NOT NULL, chunk TEXT NOT NULL, PRIMARY KEY (blob, idx)
) WITHOUT ROWID;
CREATE INDEX blob_chunks_by_chunk ON blob_chunks (chunk);
"""


class V1Store:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.blobs = data_dir / "blobs"
        for sub in ("", ".tmp", ".spare", ".corrupt"):
            (self.blobs / sub).mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(data_dir / "index.sqlite3", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(V1_SCHEMA)

    def path(self, cid: Cid, suffix: str = "") -> Path:
        h = hex_of(cid)
        (self.blobs / h[:2]).mkdir(exist_ok=True)
        return self.blobs / h[:2] / (h[2:] + suffix)

    def add(
        self, data: bytes, *, pinned: bool = True, held: list[int] | None = None, name: str = ""
    ) -> Manifest:
        """A blob; ``held`` lists the chunks present (all by default: complete)."""
        manifest, chunks = chunk_blob(data, name=name or None)
        present = range(len(chunks)) if held is None else held
        for i in present:
            self.path(manifest.chunks[i]).write_bytes(chunks[i])
            self.db.execute(
                "INSERT OR IGNORE INTO chunks VALUES (?, ?)", (manifest.chunks[i], len(chunks[i]))
            )
        self.path(manifest.cid, ".manifest").write_bytes(manifest.encode())
        complete = len(present) == len(chunks)
        self.db.execute(
            "INSERT INTO blobs VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                manifest.cid,
                manifest.size,
                manifest.chunk_size,
                len(chunks),
                manifest.content,
                len(manifest.encode()),
                manifest.name,
                None,
                int(pinned),
                int(complete),
                1.0,
                1.0,
            ),
        )
        self.db.executemany(
            "INSERT INTO blob_chunks VALUES (?, ?, ?)",
            ((manifest.cid, i, c) for i, c in enumerate(manifest.chunks)),
        )
        return manifest

    def close(self) -> None:
        self.db.close()
