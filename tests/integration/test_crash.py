"""kill -9 of a real daemon during add, put and GC, and a full disk: nothing
acknowledged is lost, nothing corrupt is served, reopening cleans up (DESIGN.md 3)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio

from hearthfile.blobs.chunker import CHUNK_SIZE, chunk_blob
from hearthfile.errors import PeerUnavailable, ServiceError
from hearthfile.identity import NodeKey
from hearthfile.transfer.fileproto import manifest_items
from tests.integration.nodes import Daemon, bytes_in, wait_for
from tests.integration.test_file_service import connect
from tests.unit.test_chunker import payload

CS = CHUNK_SIZE
MIB = 1024 * 1024


def add_files(
    node: Daemon, where: Path, count: int, size: int, seed: int, *flags: str
) -> dict[str, bytes]:
    acked = {}
    for n in range(count):
        data = payload(size, seed + n)
        src = where / f"a{seed}-{n}.bin"
        src.write_bytes(data)
        acked[node.ok("add", *flags, str(src)).split()[-1]] = data
    return acked


def writing(node: Daemon) -> int:
    """Bytes the node's adds have written to temporary files, and journals noted."""
    return bytes_in(node.home / "data" / "tmp")


def leftovers(node: Daemon) -> list[str]:
    tmp = node.home / "data" / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []


def assert_all_served(node: Daemon, acked: dict[str, bytes], tmp_path: Path) -> None:
    for cid, data in acked.items():
        out = tmp_path / f"check-{cid[-12:]}"
        out.unlink(missing_ok=True)
        node.ok("get", cid, "-o", str(out))
        assert out.read_bytes() == data, f"{cid} came back different"


def test_kill_9_during_add_loses_nothing_acknowledged(
    make_node: Callable[[str], Daemon], tmp_path: Path
) -> None:
    node = make_node("n").start()
    acked = add_files(node, tmp_path, 4, 300_000, 10)
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        for i in range(24):
            f.write(payload(4 * MIB, 100 + i))
    adder = node.background("add", str(big), stdout=subprocess.PIPE)
    wait_for(lambda: writing(node) > 0 or adder.poll() is not None, 60, "the add to write")
    killed = adder.poll() is None
    assert node.stop(signal.SIGKILL) == -signal.SIGKILL
    adder.communicate(timeout=30)
    node.start()
    assert leftovers(node) == [], "opening cleaned what the crash left"
    listed = {row["cid"] for row in json.loads(node.ok("--json", "ls"))}
    assert set(acked) <= listed
    assert killed, "the daemon died while the add was writing"
    assert listed == set(acked), "the interrupted add is not visible"
    verify = json.loads(node.ok("--json", "verify"))
    assert verify["clean"], verify
    assert_all_served(node, acked, tmp_path)
    again = node.ok("add", str(big)).split()[-1]
    assert_all_served(node, {again: big.read_bytes()}, tmp_path)


async def test_kill_9_during_put_keeps_the_rest_and_shows_nothing_half_done(
    make_node: Callable[[str], Daemon], tmp_path: Path
) -> None:
    key = NodeKey.generate()
    node = make_node("n")
    node.ok("trust", str(key.node_id), "--level", "trusted")
    node.start()
    acked = add_files(node, tmp_path, 3, 200_000, 20)
    manifest, chunks = chunk_blob(payload(32 * CS, 30))
    encoded = manifest.encode()
    sent = 0
    with trio.fail_after(120):
        async with connect(node, key) as conn:
            args = {"cid": manifest.cid, "manifest_size": len(encoded)}
            with pytest.raises((ServiceError, PeerUnavailable)):
                async with conn.open_call("file.put", args) as call:
                    for item in manifest_items(encoded):
                        await call.send(item)
                    async for _ in call:
                        pass
                    for index, data in enumerate(chunks):
                        await call.send({"i": index, "data": data})
                        sent += 1
                        if sent == 12:
                            await trio.to_thread.run_sync(node.stop, signal.SIGKILL)
                    await call.send_end()
                    await call.result()
    assert sent >= 12
    node.start()
    assert leftovers(node) == []
    assert node.cli("stat", manifest.cid).returncode == 1 or not json.loads(
        node.ok("--json", "stat", manifest.cid)
    ).get("complete")
    assert {row["cid"] for row in json.loads(node.ok("--json", "ls"))} == set(acked)
    assert json.loads(node.ok("--json", "verify"))["clean"]
    assert_all_served(node, acked, tmp_path)


def test_kill_9_during_gc_keeps_every_pinned_blob(
    make_node: Callable[[str], Daemon], tmp_path: Path
) -> None:
    node = make_node("n").start(config="file:\n  max_store_bytes: 1MiB\n")
    pinned = add_files(node, tmp_path, 12, 40_000, 40)
    for cid in pinned:
        node.ok("pin", cid)
    cache = add_files(node, tmp_path, 60, 70_000, 60, "--no-pin")
    blobs = node.home / "data" / "blobs"

    def blob_files() -> int:
        return sum(1 for p in blobs.rglob("*") if len(p.name) == 64)

    before = blob_files()
    collector = node.background("gc", stdout=subprocess.PIPE)
    wait_for(
        lambda: blob_files() < before or collector.poll() is not None,
        60,
        "GC to start evicting",
    )
    assert collector.poll() is None or blob_files() < before
    assert node.stop(signal.SIGKILL) == -signal.SIGKILL
    collector.communicate(timeout=30)
    node.start()
    listed = {row["cid"] for row in json.loads(node.ok("--json", "ls"))}
    assert set(pinned) <= listed
    assert json.loads(node.ok("--json", "verify"))["clean"]
    survivors = {cid: data for cid, data in cache.items() if cid in listed}
    assert_all_served(node, {**pinned, **survivors}, tmp_path)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs (root only; otherwise the test is skipped)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)])
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_a_clear_error_and_loses_nothing(
    make_node: Callable[[str], Daemon], tmp_path: Path, small_disk: Path
) -> None:
    node = make_node("n")
    config = f"node:\n  data_dir: {small_disk / 'data'}\nfile:\n  min_free_bytes: 0\n"
    node.start(config=config)
    acked = {}
    for n in range(3):
        src = tmp_path / f"s{n}.bin"
        src.write_bytes(payload(1 * MIB, 70 + n))
        acked[node.ok("add", str(src)).split()[-1]] = src.read_bytes()
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        for i in range(8):
            f.write(payload(4 * MIB, 90 + i))
    result = node.cli("add", str(big))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "disk full" in result.stderr, result.stderr
    assert "Traceback" not in node.log()
    listed = {row["cid"] for row in json.loads(node.ok("--json", "ls"))}
    assert listed == set(acked)
    verify = json.loads(node.ok("--json", "verify"))
    assert verify["clean"], verify
    assert_all_served(node, acked, tmp_path)
    small = tmp_path / "fits.bin"  # the failed add gave its space back
    small.write_bytes(payload(2 * MIB, 99))
    cid = node.ok("add", str(small)).split()[-1]
    assert_all_served(node, {cid: small.read_bytes()}, tmp_path)


def test_a_fetch_into_a_full_disk_fails_clearly_and_the_index_names_only_what_was_written(
    make_node: Callable[[str], Daemon], tmp_path: Path, small_disk: Path
) -> None:
    """Issue 13 item 8: a fetch that fills the disk used to leave index rows for
    chunks never written; now it fails with one line and verify finds nothing
    missing or corrupt."""
    holder, fetcher = make_node("holder"), make_node("fetcher")
    trust = f"trust:\n  {holder.node_id}: member\n  {fetcher.node_id}: member\n"
    gossip = "gossip:\n  interval_s: 0.3\n"
    holder.start(config=gossip + trust)
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        for i in range(8):
            f.write(payload(4 * MIB, 110 + i))
    cid = holder.ok("add", str(big)).split()[-1]
    data_dir = small_disk / "data"
    fetcher.start(
        holder,
        config=gossip + trust + f"node:\n  data_dir: {data_dir}\nfile:\n  min_free_bytes: 0\n",
    )
    wait_for(
        lambda: any(
            r["node_id"] == holder.node_id for r in json.loads(fetcher.ok("--json", "whohas", cid))
        ),
        60,
        "the fetcher to learn the holder",
    )
    result = fetcher.cli("get", cid, "-o", str(tmp_path / "out.bin"))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "disk full" in result.stderr, result.stderr
    verify = json.loads(fetcher.ok("--json", "verify"))
    assert verify["clean"] and not verify["missing"], verify
    assert fetcher.cli("stat", cid).returncode == 1 or not json.loads(
        fetcher.ok("--json", "stat", cid)
    ).get("complete")
