"""A lost, emptied, damaged or WAL-less index is noticed and rebuilt from the files on
disk; nothing on disk is deleted because the index does not know it (issue 13 item 2)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from hearthfile.blobs.chunker import CHUNK_SIZE
from hearthfile.blobs.store import BlobStore
from tests.unit.test_chunker import payload
from tests.unit.test_store import read_all

CS = CHUNK_SIZE


def filled(data_dir: Path) -> dict[str, bytes]:
    """A closed store holding three blobs (one partial-sized, one pinned)."""
    store = BlobStore(data_dir)
    held = {}
    for n, size in enumerate((10, 3 * CS + 1, 2 * CS)):
        data = payload(size, 50 + n)
        held[store.add_bytes(data, pin=n == 1).cid] = data
    store.close()
    return held


def lose_index(data_dir: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{data_dir / 'index.sqlite3'}{suffix}").unlink(missing_ok=True)


def empty_index(data_dir: Path) -> None:
    lose_index(data_dir)
    (data_dir / "index.sqlite3").write_bytes(b"")


def damage_index(data_dir: Path) -> None:
    path = data_dir / "index.sqlite3"
    raw = bytearray(path.read_bytes())
    raw[:100] = os.urandom(100)  # the header: not a database any more
    path.write_bytes(raw)


def damage_index_pages(data_dir: Path) -> None:
    path = data_dir / "index.sqlite3"
    raw = bytearray(path.read_bytes())
    for offset in range(4096, len(raw), 4096):  # every b-tree page header past the first
        raw[offset : offset + 12] = b"\xff" * 12
    path.write_bytes(raw)


@pytest.mark.parametrize(
    "harm",
    [lose_index, empty_index, damage_index, damage_index_pages],
    ids=["deleted", "emptied", "damaged header", "damaged pages"],
)
def test_a_lost_index_is_rebuilt_and_nothing_is_lost(
    tmp_path: Path, harm: Callable[[Path], None]
) -> None:
    data_dir = tmp_path / "d"
    held = filled(data_dir)
    harm(data_dir)
    store = BlobStore(data_dir)
    if harm is damage_index_pages:
        # Page damage past the header is found by SQLite's page check, which runs
        # at open only after a crash (it is too dear for every open) and in verify.
        store.verify()
    assert len(store.notices) >= 1 and all("\n" not in n for n in store.notices)
    assert "rebuilt" in store.notices[-1]
    for cid, data in held.items():
        assert store.has_blob(cid) and read_all(store, cid) == data
        assert store.stat(cid).pinned  # the pins were lost with the index: keep everything
    report = store.verify()
    assert report.clean and report.untracked_removed == 0
    assert {i.cid for i in store.list_cids()} == set(held)
    store.close()
    reopened = BlobStore(data_dir)
    assert reopened.notices == []
    reopened.close()


def test_verify_takes_back_files_the_index_lost_and_deletes_none(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    held = filled(data_dir)
    forgotten = next(iter(held))
    db = sqlite3.connect(data_dir / "index.sqlite3")
    with db:
        db.execute("DELETE FROM blob_chunks WHERE blob = ?", (forgotten,))
        db.execute("DELETE FROM blobs WHERE cid = ?", (forgotten,))
        db.execute("DELETE FROM have")
    db.close()
    files_before = sorted(p.name for p in (data_dir / "blobs").rglob("*") if p.is_file())
    store = BlobStore(data_dir)
    report = store.verify()
    assert report.adopted >= 1 and report.untracked_removed == 0
    files_after = sorted(p.name for p in (data_dir / "blobs").rglob("*") if p.is_file())
    assert files_after == files_before
    for cid, data in held.items():
        assert read_all(store, cid) == data
    assert store.verify().clean
    store.close()


def test_a_wal_lost_in_a_crash_is_noticed_at_open(tmp_path: Path) -> None:
    """A writer dies (no close) after a commit that sits only in the WAL; the WAL
    file is then lost. Opening takes the committed blob back from disk."""
    data_dir = tmp_path / "d"
    held = filled(data_dir)
    late = payload(5000, 77)
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from hearthfile.blobs.store import BlobStore\n"
        "s = BlobStore(Path(sys.argv[1]))\n"
        "print(s.add_bytes(bytes.fromhex(sys.argv[2])).cid, flush=True)\n"
        "os._exit(0)\n"  # as kill -9 would: no close, no checkpoint
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(data_dir), late.hex()],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    late_cid = out.split()[-1]
    wal = data_dir / "index.sqlite3-wal"
    assert wal.exists() and wal.stat().st_size > 0, "the commit is in the WAL"
    wal.unlink()
    Path(f"{data_dir / 'index.sqlite3'}-shm").unlink(missing_ok=True)
    store = BlobStore(data_dir)
    assert store.notices and "WAL" in store.notices[0]
    assert read_all(store, late_cid) == late  # type: ignore[arg-type]
    for cid, data in held.items():
        assert read_all(store, cid) == data
    assert store.verify().clean
    store.close()


def test_damaged_pages_after_a_crash_are_found_at_open(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    held = filled(data_dir)
    damage_index_pages(data_dir)
    (data_dir / "store.lock").write_text("pid 1\n")  # its last writer never closed it
    store = BlobStore(data_dir)
    assert store.notices and "damaged" in store.notices[0]
    for cid, data in held.items():
        assert read_all(store, cid) == data
    store.close()


def test_a_blob_file_that_does_not_match_its_name_is_moved_aside(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    held = filled(data_dir)
    lose_index(data_dir)
    victim = next(cid for cid, data in held.items() if len(data) > 16 * 1024)
    hexpart = victim.split(":")[1]
    path = data_dir / "blobs" / hexpart[:2] / hexpart
    path.write_bytes(payload(CS, 99))  # a blob's bytes, under another blob's name
    store = BlobStore(data_dir)
    assert not store.has_blob(victim)
    assert list((data_dir / "corrupt").iterdir()) and not path.exists()
    assert len(store.list_cids()) == len(held) - 1
    store.close()


def test_a_readonly_open_of_a_damaged_index_is_one_clear_error(tmp_path: Path) -> None:
    from hearthfile.blobs.chunker import BlobError

    data_dir = tmp_path / "d"
    filled(data_dir)
    damage_index(data_dir)
    with pytest.raises(BlobError) as err:
        BlobStore(data_dir, readonly=True)
    assert err.value.code == "io_error" and "damaged" in str(err.value)
