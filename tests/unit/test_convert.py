"""A version 1 store (a file per chunk) opens converted to version 2 (a file per
blob), resumably: nothing it held is lost, a kill -9 mid-conversion resumes."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from hearthfile.blobs.chunker import CHUNK_SIZE
from hearthfile.blobs.store import BlobStore
from hearthfile.cids import Cid, hex_of
from tests.unit.test_chunker import payload
from tests.unit.test_store import blob_path, read_all
from tests.v1store import V1Store

CS = CHUNK_SIZE


def v1_files(data_dir: Path) -> list[Path]:
    return [
        p
        for p in (data_dir / "blobs").rglob("*")
        if p.is_file() and len(p.name.removesuffix(".manifest")) == 62
    ]


def test_a_version_1_store_opens_converted_and_loses_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    v1 = V1Store(data_dir)
    common = payload(2 * CS, 1)
    held = {
        v1.add(b"").cid: b"",
        v1.add(payload(100, 2), name="small.txt").cid: payload(100, 2),
        v1.add(common + payload(CS + 5, 3), pinned=False).cid: common + payload(CS + 5, 3),
        v1.add(common + payload(7, 4)).cid: common + payload(7, 4),
    }
    partial = v1.add(payload(4 * CS, 5), held=[0, 2], pinned=False)
    v1.close()
    assert v1_files(data_dir)
    store = BlobStore(data_dir)
    assert any("converted" in n for n in store.notices)
    for cid, data in held.items():
        assert store.has_blob(cid) and read_all(store, cid) == data
        if len(data) > 16 * 1024:
            assert blob_path(store, cid).read_bytes() == data, "one file of exactly its bytes"
    pins = {i.cid: i.pinned for i in store.list_cids()}
    assert pins == {cid: len(data) != 2 * CS + CS + 5 for cid, data in held.items()}
    assert store.stat(Cid(list(held)[1])).name == "small.txt"
    assert not store.has_blob(partial.cid)
    assert store.missing_chunks(partial.cid) == [1, 3], "what version 1 held of it is kept"
    assert v1_files(data_dir) == [] and not (data_dir / "blobs" / ".tmp").exists()
    assert store.verify().clean
    store.close()
    db = sqlite3.connect(data_dir / "index.sqlite3")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    db.close()
    reopened = BlobStore(data_dir)
    assert reopened.notices == [] and reopened.count() == len(held)
    reopened.close()


def test_a_corrupt_version_1_chunk_leaves_its_blob_partial(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    v1 = V1Store(data_dir)
    good = payload(2 * CS, 6)
    hurt = v1.add(payload(3 * CS, 7))
    kept = v1.add(good).cid
    v1.path(hurt.chunks[1]).write_bytes(b"\0" * CS)
    v1.close()
    store = BlobStore(data_dir)
    assert read_all(store, kept) == good
    assert not store.has_blob(hurt.cid) and store.missing_chunks(hurt.cid) == [1]
    store.close()


CONVERT = (
    "import sys; from pathlib import Path; from hearthfile.blobs.store import BlobStore; "
    "BlobStore(Path(sys.argv[1])).close()"
)


def _pending(data_dir: Path) -> int | None:
    db = sqlite3.connect(f"file:{data_dir / 'index.sqlite3'}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT COUNT(*) FROM v1_pending").fetchone()[0])
    except sqlite3.OperationalError:
        return None  # not migrated yet, or the conversion is over
    finally:
        db.close()


def test_kill_9_mid_conversion_then_reopen_finishes_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    v1 = V1Store(data_dir)
    held = {}
    for i in range(120):
        data = payload(2 * CS + i, 100 + i)
        held[v1.add(data).cid] = data
    v1.close()
    proc = subprocess.Popen([sys.executable, "-c", CONVERT, str(data_dir)])
    deadline = time.monotonic() + 120
    while True:
        pending = _pending(data_dir)
        if pending is not None and 0 < pending < len(held) - 5:
            break
        assert proc.poll() is None, "the conversion ended before the kill: no scenario"
        assert time.monotonic() < deadline, "the conversion never got under way"
        time.sleep(0.002)  # polling a condition, not standing in for synchronisation
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    left = _pending(data_dir)
    assert left is not None and 0 < left < len(held), f"killed mid-conversion ({left} left)"
    assert v1_files(data_dir), "version 1 files stay until every blob is converted"
    store = BlobStore(data_dir)
    assert store.count() == len(held)
    for cid, data in held.items():
        assert read_all(store, cid) == data
        assert (data_dir / "blobs" / hex_of(cid)[:2] / hex_of(cid)).stat().st_size == len(data)
    assert v1_files(data_dir) == [] and _pending(data_dir) is None
    assert store.verify().clean
    store.close()
