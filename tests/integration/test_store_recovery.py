"""A real daemon whose index was lost: it says so, rebuilds it, and `verify` keeps
every blob (issue 13 item 2: it used to start empty and then delete them all)."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.nodes import Daemon
from tests.unit.test_chunker import payload
from tests.unit.test_index_recovery import damage_index, empty_index, lose_index


@pytest.mark.parametrize(
    ("harm", "sig"),
    [(lose_index, signal.SIGKILL), (empty_index, signal.SIGKILL), (damage_index, signal.SIGTERM)],
    ids=["deleted after kill -9", "emptied after kill -9", "damaged after a stop"],
)
def test_a_daemon_rebuilds_a_lost_index_and_verify_deletes_nothing(
    make_node: Callable[[str], Daemon],
    tmp_path: Path,
    harm: Callable[[Path], None],
    sig: signal.Signals,
) -> None:
    node = make_node("n").start()
    files = {}
    for n in range(5):
        src = tmp_path / f"f{n}.bin"
        src.write_bytes(payload(1000 + 300_000 * n, 60 + n))
        files[node.ok("add", str(src)).split()[-1]] = src
    assert node.stop(sig) == (-signal.SIGKILL if sig == signal.SIGKILL else 0)
    harm(node.home / "data")
    node.start()
    assert "rebuilt it from disk" in node.log()
    listed = {row["cid"] for row in json.loads(node.ok("--json", "ls"))}
    assert listed == set(files)
    verify = json.loads(node.ok("--json", "verify"))
    assert verify["clean"] and verify["untracked_removed"] == 0
    for cid, src in files.items():
        out = tmp_path / f"out-{cid[-8:]}"
        node.ok("get", cid, "-o", str(out))
        assert out.read_bytes() == src.read_bytes()


def test_gc_evicts_to_the_store_limit_with_an_event_and_keeps_pinned_blobs(
    make_node: Callable[[str], Daemon], tmp_path: Path
) -> None:
    node = make_node("n").start(config="file:\n  max_store_bytes: 1MiB\n")
    cids = []
    for n in range(3):
        src = tmp_path / f"g{n}.bin"
        src.write_bytes(payload(600_000, 80 + n))
        cids.append(node.ok("add", *([] if n == 0 else ["--no-pin"]), str(src)).split()[-1])
    assert json.loads(node.ok("--json", "stat", cids[0]))["pinned"] is True  # added: pinned
    removed = json.loads(node.ok("--json", "gc"))
    assert cids[0] not in str(removed)
    listed = {row["cid"] for row in json.loads(node.ok("--json", "ls"))}
    assert cids[0] in listed and len(listed) < 3
    evicted = [
        e["cid"]
        for e in map(json.loads, node.ok("--json", "events").splitlines())
        if e["event"] == "blob.evicted"
    ]
    assert evicted and set(evicted) == set(cids) - listed
    assert node.cli("verify").returncode == 0


def test_verify_names_the_blobs_a_corrupt_file_affected(
    make_node: Callable[[str], Daemon], tmp_path: Path
) -> None:
    node = make_node("n").start()
    src = tmp_path / "v.bin"
    src.write_bytes(payload(600_000, 91))
    cid = node.ok("add", str(src)).split()[-1]
    other = tmp_path / "w.bin"
    other.write_bytes(payload(1000, 92))
    untouched = node.ok("add", str(other)).split()[-1]
    hexpart = cid.removeprefix("blake3:")
    victim = node.home / "data" / "blobs" / hexpart[:2] / hexpart  # the first blob's file
    raw = bytearray(victim.read_bytes())
    raw[7] ^= 0xFF
    victim.write_bytes(raw)
    result = node.cli("verify")
    assert result.returncode == 1
    assert f"affected blob: {cid}" in result.stderr and untouched not in result.stderr
    report = json.loads(node.ok("--json", "verify"))  # the corrupt file is out of service now
    assert report["clean"]
    listed = {row["cid"] for row in json.loads(node.ok("--json", "ls"))}
    assert cid not in listed and untouched in listed  # partial until a fetch repairs it
