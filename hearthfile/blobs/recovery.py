"""What opening a store puts right, before anything reads it.

Ring: blobs (layer 1, blocking). ``recover`` runs once, as the writer opens the
store (``BlobStore.__init__``): it undoes what batches that crashed left (their
journals) and clears temporary files; finishes a completion a crash interrupted
between the rename of the blob's file and the index saying so (its content
checked first), or forgets the have-map of a partial blob whose file is gone;
rebuilds what a lost, emptied or damaged index forgot from the files on disk,
which describe themselves (``adopt``, also run by ``verify``); and hands a
version 1 store to ``convert.py``. Nothing on disk is deleted because the index
does not know it: files are taken back, or moved to ``corrupt/`` when their
bytes do not match their name.
"""

from __future__ import annotations

import io
import os
from contextlib import suppress
from typing import TYPE_CHECKING, BinaryIO

from hearthfile.blobs.chunker import (
    BlobError,
    Manifest,
    ManifestBuilder,
    decode_manifest,
    iter_chunks,
)
from hearthfile.blobs.convert import adopt_v1, convert_v1
from hearthfile.blobs.index import index_blob
from hearthfile.blobs.pack import INLINE_MAX
from hearthfile.cids import Cid, cid_of, hex_of

if TYPE_CHECKING:
    from hearthfile.blobs.store import BlobStore


def recover(store: BlobStore, wal_lost: bool) -> None:
    """Everything opening does to the store (the writer only): crashed batches and
    completions, a lost index (``wal_lost``: the index may lack its last commits),
    a version 1 layout."""
    _undo_crashes(store)
    check_index(store, wal_lost)
    convert_v1(store)


def _undo_crashes(store: BlobStore) -> None:
    """Undo what crashed batches left (their journals), clear temporary files,
    and finish or roll back completions a crash interrupted."""
    for journal in sorted(store.layout.tmp.glob("*.journal")):
        for entry in journal.read_text(errors="replace").split():
            _undo(store, entry)
    for leftover in store.layout.tmp.iterdir():
        if leftover.is_file():
            leftover.unlink(missing_ok=True)
    rows = store._query("SELECT cid FROM blobs WHERE complete = 0 AND size > ?", (INLINE_MAX,))
    for (cid,) in rows:
        if not os.path.exists(store.layout.partial(hex_of(cid))):
            _partial_file_gone(store, Cid(cid))


def _undo(store: BlobStore, entry: str) -> None:
    kind, _, hexpart = entry.partition(":")
    cid = Cid("blake3:" + hexpart)
    if kind == "c" and not store.has_blob(cid):
        with suppress(FileNotFoundError):
            os.unlink(store.layout.complete(hexpart))
    elif kind == "s" and not store._query("SELECT 1 FROM blobs WHERE cid = ?", (cid,)):
        store.pack.delete_many([cid])


def _partial_file_gone(store: BlobStore, cid: Cid) -> None:
    """A partial blob without its file: a crash between the rename that completes
    it and the index saying so (then its complete file is there: check it and
    finish), or a file lost (then nothing of it is held)."""
    if os.path.exists(store.layout.complete(hex_of(cid))):
        manifest = store.read_manifest(cid)
        if store._content_matches(manifest, store.layout.complete(hex_of(cid))):
            with store.tx() as db:
                db.execute("UPDATE blobs SET complete = 1 WHERE cid = ?", (cid,))
                db.execute("DELETE FROM have WHERE blob = ?", (cid,))
            return
    with store.tx() as db:
        db.execute("DELETE FROM have WHERE blob = ?", (cid,))


def check_index(store: BlobStore, wal_lost: bool) -> None:
    """Rebuild what the index lost from the files on disk, which describe
    themselves (a blob file hashes to its manifest and so to its name): an
    index deleted, emptied, damaged, or missing the commits of a WAL lost in
    a crash. Nothing on disk is deleted because the index does not know it."""
    empty = not store._query("SELECT 1 FROM blobs LIMIT 1")
    if not (empty or wal_lost):
        return
    adopted = adopt(store)
    if adopted:
        why = "knew no blobs" if empty else "may have lost its last commits (no WAL after a crash)"
        store._notice(
            f"the index {why}: rebuilt it from disk ({adopted} blobs taken back; they are "
            "pinned, as the index no longer says which were)"
        )


def adopt(store: BlobStore) -> int:
    """Index the blobs on disk the index does not know: complete files and pack
    rows whose bytes hash to the name they are kept under (pinned: whether the
    user pinned them is lost), and partial files with their manifest (what
    they hold is checked chunk by chunk). A file whose bytes do not match its
    name is moved to ``corrupt/``. Returns how many blobs were taken back."""
    known = {r[0] for r in store._query("SELECT cid FROM blobs")}
    adopted = 0
    for hexpart in store.layout.complete_names():
        cid = Cid("blake3:" + hexpart)
        if cid not in known and not store.writers(cid):
            adopted += _adopt_file(store, cid, store.layout.complete(hexpart))
    for name in store.pack.cids():
        if name not in known:
            adopted += _adopt_small(store, Cid(name))
    for hexpart in store.layout.partial_names():
        if "blake3:" + hexpart not in known:
            adopted += _adopt_partial(store, hexpart)
    return adopted + adopt_v1(store, known)


def _adopt_file(store: BlobStore, cid: Cid, path: str) -> int:
    try:
        with open(path, "rb", buffering=0) as stream:
            manifest = _manifest_of(stream)
    except OSError:
        return 0
    if manifest.cid != cid:
        with suppress(OSError):
            os.replace(path, f"{store.layout.corrupt}/{hex_of(cid)}.mismatch")
        return 0
    with store.tx() as db:
        index_blob(db, manifest, pin=True, origin="added", now=store.now(), complete=True)
    return 1


def _adopt_small(store: BlobStore, cid: Cid) -> int:
    data = store.pack.get(cid)
    if data is None:
        return 0
    manifest = _manifest_of_bytes(data)
    if manifest.cid != cid:
        store.pack.delete_many([cid])  # kept under a name its bytes do not have
        store.layout.keep_corrupt(f"{hex_of(cid)}.small", data)
        return 0
    with store.tx() as db:
        index_blob(db, manifest, pin=True, origin="added", now=store.now(), complete=True)
    return 1


def _adopt_partial(store: BlobStore, hexpart: str) -> int:
    cid = Cid("blake3:" + hexpart)
    try:
        with open(store.layout.partial(hexpart) + ".manifest", "rb") as stream:
            manifest = decode_manifest(stream.read(), cid)
    except (OSError, BlobError):
        return 0
    with store.tx() as db:
        index_blob(db, manifest, pin=False, origin="fetched", now=store.now(), complete=False)
    held = []
    with suppress(OSError), store.open_partial(manifest.cid, manifest.size) as blob_file:
        for index, chunk in enumerate(manifest.chunks):
            view = blob_file.read_at(index * manifest.chunk_size, manifest.chunk_length(index))
            length = manifest.chunk_length(index)
            if len(view) >= length and cid_of(view[:length]) == chunk:
                held.append((cid, index))
    with store.tx() as db:
        db.executemany("INSERT OR IGNORE INTO have (blob, idx) VALUES (?, ?)", held)
    return 1


def _manifest_of(stream: BinaryIO) -> Manifest:
    builder = ManifestBuilder()
    for view in iter_chunks(stream):
        builder.add(view)
    return builder.finish()


def _manifest_of_bytes(data: bytes) -> Manifest:
    return _manifest_of(io.BytesIO(data))
