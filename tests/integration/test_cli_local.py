"""The command line in local mode, through real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.integration.nodes import bytes_in
from tests.unit.test_chunker import payload

MISSING = "blake3:" + "0" * 64


def add(home: Path, *paths: Path, pin: bool = False) -> str:
    result = run_cli(home, "add", *map(str, paths), *([] if pin else ["--no-pin"]))
    assert result.returncode == 0, result.stderr
    return result.out.strip().splitlines()[-1]


def test_add_cat_get_stat_ls(home: Path, tmp_path: Path) -> None:
    src = tmp_path / "photo.jpg"
    src.write_bytes(payload(700_000, 3))
    cid = add(home, src)
    assert cid.startswith("blake3:")
    cat = run_cli(home, "cat", cid)
    assert cat.returncode == 0 and cat.stdout == src.read_bytes()
    out = tmp_path / "copy.jpg"
    assert run_cli(home, "get", cid, "-o", str(out)).returncode == 0
    assert out.read_bytes() == src.read_bytes()
    stat = json.loads(run_cli(home, "--json", "stat", cid).out)
    assert stat["size"] == 700_000 and stat["chunks"] == 3 and stat["name"] == "photo.jpg"
    assert stat["mime"] == "image/jpeg" and stat["pinned"] is False, "added with --no-pin"
    listed = json.loads(run_cli(home, "ls", "--json").out)
    assert [entry["cid"] for entry in listed] == [cid]


def test_add_many_prints_one_cid_per_file(home: Path, tmp_path: Path) -> None:
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"f{i}")
        paths[-1].write_bytes(payload(4096, i))
    result = run_cli(home, "add", *map(str, paths))
    cids = result.out.split()
    assert len(set(cids)) == 5
    for path, cid in zip(paths, cids, strict=True):
        assert run_cli(home, "cat", cid).stdout == path.read_bytes()


def test_bad_input_exit_codes(home: Path, tmp_path: Path) -> None:
    not_found = run_cli(home, "cat", MISSING)
    assert not_found.returncode == 1
    assert not_found.stderr.strip() == f"hearthfile: not found: {MISSING}"
    for args in (["cat", "blake3:xyz"], ["stat", "../etc"], ["pin", "BLAKE3:" + "0" * 64]):
        result = run_cli(home, *args)
        assert result.returncode == 2, args
        assert "malformed CID" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "empty").mkdir()
    directory = run_cli(home, "add", str(tmp_path / "empty"))
    assert directory.returncode == 1 and "nothing to add" in directory.stderr
    missing = run_cli(home, "add", str(tmp_path / "nope"))
    assert missing.returncode == 1 and "cannot read" in missing.stderr
    assert run_cli(home, "frobnicate").returncode == 2
    for result in (not_found, directory, missing):
        assert len(result.stderr.strip().splitlines()) == 1


def test_unreadable_file_leaves_store_intact(home: Path, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    kept = tmp_path / "kept"
    kept.write_bytes(b"kept")
    cid = add(home, kept)
    locked = tmp_path / "locked"
    locked.write_bytes(b"secret")
    locked.chmod(0)
    assert run_cli(home, "add", str(locked)).returncode == 1
    assert run_cli(home, "cat", cid).stdout == b"kept"


def test_pin_rm_gc(home: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(payload(300_000, 1))
    b.write_bytes(payload(300_000, 2))
    pinned, loose = add(home, a, pin=True), add(home, b)
    refused = run_cli(home, "rm", pinned)
    assert refused.returncode == 1 and "pinned" in refused.stderr
    gc = json.loads(run_cli(home, "--json", "gc", "--all").out)
    assert gc["removed"] == [loose]
    assert run_cli(home, "cat", loose).returncode == 1
    assert run_cli(home, "unpin", pinned).returncode == 0
    assert run_cli(home, "rm", pinned).returncode == 0
    assert json.loads(run_cli(home, "ls", "--json").out) == []


def test_corrupt_chunk_detected_by_cat_and_verify(home: Path, tmp_path: Path) -> None:
    src = tmp_path / "doc"
    src.write_bytes(payload(600_000, 4))
    cid = add(home, src)
    other = tmp_path / "other"
    other.write_bytes(b"unrelated")
    other_cid = add(home, other)
    hexpart = cid.removeprefix("blake3:")
    with open(home / "data" / "blobs" / hexpart[:2] / hexpart, "r+b") as victim:
        victim.write(b"\0" * 262144)  # its first chunk
    verify = run_cli(home, "verify")
    assert verify.returncode == 1 and "corrupt" in verify.stderr
    cat = run_cli(home, "cat", cid)
    assert cat.returncode == 1 and "Traceback" not in cat.stderr
    assert run_cli(home, "cat", other_cid).stdout == b"unrelated"
    assert run_cli(home, "verify").returncode == 0, "the corrupt file was moved aside"


def _bytes_in_progress(home: Path) -> int:
    """Bytes an add has written to its temporary file so far."""
    return bytes_in(home / "data" / "tmp", skip_suffix=".journal")


@pytest.mark.parametrize("kill_after_chunks", [1, 40, 120])
def test_kill_9_mid_add_then_verify_and_readd(
    home: Path, tmp_path: Path, kill_after_chunks: int
) -> None:
    """A real SIGKILL while ``add`` is writing: the store stays clean, nothing partial shows."""
    src = tmp_path / "big"
    with open(src, "wb") as f:
        for i in range(24):  # 96 MiB: long enough to be caught mid-write
            f.write(payload(4 * 1024 * 1024, i))
    assert run_cli(home, "init").returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "hearthfile", "--home", str(home), "add", str(src)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while _bytes_in_progress(home) < kill_after_chunks * 262144 and proc.poll() is None:
        assert time.monotonic() < deadline, "add never started writing"
        time.sleep(0.005)  # polling a condition, not standing in for synchronisation
    assert proc.poll() is None, "add finished before the kill: the scenario did not happen"
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    listed = json.loads(run_cli(home, "ls", "--json").out)
    assert listed == [], "a partial blob must never be listed"
    verify = run_cli(home, "verify", "--json")
    assert verify.returncode == 0, verify.stderr
    assert json.loads(verify.out)["untracked_removed"] == 0, "open already cleaned the leftovers"
    cid = add(home, src)
    assert run_cli(home, "verify").returncode == 0
    out = tmp_path / "out"
    assert run_cli(home, "get", cid, "-o", str(out)).returncode == 0
    assert out.stat().st_size == src.stat().st_size
    assert out.read_bytes() == src.read_bytes()
