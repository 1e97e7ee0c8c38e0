"""Converting a version 1 store (one file per chunk) to version 2 (one per blob).

Ring: blobs (layer 1, blocking). Opening a version 1 store migrates its index
(``index.MIGRATE_V1_V2``: every blob becomes a partial blob noted in
``v1_pending``); this module then copies each blob's chunk files, each checked
against its CID, into the blob's version 2 file through the same writes a fetch
uses, and completes the blobs that were complete (their content checked). A
blob leaves ``v1_pending`` only once its version 2 state is committed, so a
crash (kill -9) at any point resumes where it stopped: chunks already copied
are in the have-map and are not copied again. The version 1 files are removed
only after every blob is converted; until then the store needs room for both.

A chunk file that is missing or corrupt leaves its blob partial (a fetch
repairs it), as version 1 would have served nothing of it either.
"""

from __future__ import annotations

import os
import shutil
from contextlib import suppress
from typing import TYPE_CHECKING, Final

from hearthfile.blobs.chunker import BlobError, Manifest, check_chunk, decode_manifest
from hearthfile.blobs.pack import INLINE_MAX
from hearthfile.cids import Cid, hex_of

if TYPE_CHECKING:
    from hearthfile.blobs.store import BlobStore

V1_MANIFEST: Final = ".manifest"
#: Chunks copied per write batch.
GROUP: Final = 32


def convert_v1(store: BlobStore) -> None:
    """Finish converting whatever ``v1_pending`` lists, then drop the version 1 files."""
    if not _pending_table(store):
        return
    pending = store._query("SELECT cid, was_complete FROM v1_pending ORDER BY cid")
    if pending:
        store._notice(f"converting {len(pending)} blobs to the one-file-per-blob layout")
    kept = 0
    for cid, was_complete in pending:
        kept += _convert_blob(store, Cid(cid), bool(was_complete))
    _remove_v1_files(store)
    with store.tx() as db:
        db.execute("DROP TABLE v1_pending")
    if pending:
        store._notice(f"converted {len(pending)} blobs ({kept} complete)")


def _pending_table(store: BlobStore) -> bool:
    return bool(
        store._query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'v1_pending'")
    )


def _convert_blob(store: BlobStore, cid: Cid, was_complete: bool) -> int:
    """Copy one blob's chunk files into its new file; returns 1 if it is complete."""
    try:
        manifest = store.read_manifest(cid)
        missing = store.missing_chunks(cid)
    except BlobError:  # its rows do not make its CID: nothing of it can be trusted
        missing, manifest = [], None
    if manifest is not None and missing:
        if manifest.size > INLINE_MAX:
            store._write_sidecar(manifest)
        for start in range(0, len(missing), GROUP):
            group = [
                (i, data)
                for i in missing[start : start + GROUP]
                if (data := _chunk(store, manifest, i))
            ]
            with store.batch() as batch:
                batch.write_chunks(manifest, group)
    complete = 0
    if manifest is not None and was_complete:
        with suppress(BlobError):  # a false manifest is dropped; missing chunks leave it partial
            complete = int(store.complete_blob(cid))
    with store.tx() as db:
        db.execute("DELETE FROM v1_pending WHERE cid = ?", (cid,))
    return complete


def _chunk(store: BlobStore, manifest: Manifest, index: int) -> bytes | None:
    """Chunk ``index`` from its version 1 file, if it is there and right."""
    hexpart = hex_of(manifest.chunks[index])
    try:
        with open(f"{store.layout.blobs}/{hexpart[:2]}/{hexpart[2:]}", "rb") as f:
            data = f.read(manifest.chunk_length(index) + 1)
        check_chunk(manifest, index, data)
    except (OSError, BlobError):
        return None
    return data


def _v1_names(store: BlobStore) -> list[tuple[str, str]]:
    """(shard, name) of every version 1 file: chunks (62 hex digits) and manifests."""
    found = []
    for shard in os.listdir(store.layout.blobs):
        if len(shard) == 2 and not shard.startswith("."):
            for name in os.listdir(store.layout.blobs / shard):
                if len(name.removesuffix(V1_MANIFEST)) == 62:
                    found.append((shard, name))
    return found


def _remove_v1_files(store: BlobStore) -> None:
    for shard, name in _v1_names(store):
        with suppress(FileNotFoundError):
            os.unlink(store.layout.blobs / shard / name)
    old = store.layout.blobs
    with suppress(OSError):
        if (old / ".corrupt").is_dir() and any((old / ".corrupt").iterdir()):
            os.replace(old / ".corrupt", store.layout.corrupt / "from-version-1")
    for leftover in (".tmp", ".spare", ".corrupt"):
        shutil.rmtree(old / leftover, ignore_errors=True)


def adopt_v1(store: BlobStore, known: set[str]) -> int:
    """An index lost on a version 1 store: its manifest files describe its blobs;
    note each for conversion. Returns how many."""
    found = 0
    for shard, name in _v1_names(store):
        if not name.endswith(V1_MANIFEST):
            continue
        cid = Cid("blake3:" + shard + name.removesuffix(V1_MANIFEST))
        if cid in known:
            continue
        try:
            with open(store.layout.blobs / shard / name, "rb") as f:
                manifest = decode_manifest(f.read(), cid)
        except (OSError, BlobError):
            continue
        store.begin_blob(manifest, origin="added")
        with store.tx() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS v1_pending "
                "(cid TEXT PRIMARY KEY, was_complete INTEGER NOT NULL) WITHOUT ROWID"
            )
            db.execute("INSERT OR IGNORE INTO v1_pending VALUES (?, 1)", (cid,))
            db.execute("UPDATE blobs SET pinned = 1 WHERE cid = ?", (cid,))
        found += 1
    return found
