"""Multi-source fetches between real daemons on loopback."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from hearthfile.blobs.chunker import chunk_blob
from hearthfile.bus.capability import CallContext, Registry
from hearthfile.errors import ServiceError
from hearthfile.identity import NodeKey
from hearthfile.services.file.service import READ
from tests.integration.nodes import Daemon, Proxy, held_chunks, wait_for
from tests.integration.test_file_service import connect
from tests.unit.test_chunker import payload

CS = 256 * 1024
MIB = 1024 * 1024


@pytest.fixture
def proxies() -> Iterator[list[Proxy]]:
    started: list[Proxy] = []
    yield started
    for proxy in started:
        proxy.stop()


def config_for(nodes: list[Daemon]) -> str:
    trust = "".join(f"  {n.node_id}: member\n" for n in nodes)
    return f"gossip:\n  interval_s: 0.3\ntrust:\n{trust}"


def write_blob(path: Path, mib: int, seed: int) -> Path:
    with open(path, "wb") as f:
        for i in range(mib):
            f.write(payload(MIB, seed * 1000 + i))
    return path


def shares(node: Daemon, cid: str) -> dict[str, int]:
    lines = node.ok("--json", "events").splitlines()
    found = [
        e for e in map(json.loads, lines) if e["event"] == "transfer.shares" and e["cid"] == cid
    ]
    assert found, "the fetch reported its shares"
    return {k: v for k, v in found[-1]["shares"].items() if v}


def knows(node: Daemon, cid: str, holders: list[Daemon]) -> bool:
    rows = json.loads(node.ok("--json", "whohas", cid))
    return {h.node_id for h in holders} <= {r["node_id"] for r in rows}


def test_three_source_parallel_fetch(make_node: Callable[[str], Daemon], tmp_path: Path) -> None:
    holders = [make_node(f"h{i}") for i in range(3)]
    fetcher = make_node("f")
    config = config_for([*holders, fetcher])
    src = write_blob(tmp_path / "src.bin", 24, 1)
    for h in holders:
        h.start(config=config)
        cid = h.ok("add", str(src)).split()[-1]
    fetcher.start(*holders, config=config)
    wait_for(lambda: knows(fetcher, cid, holders), 60, "the fetcher to learn all three holders")
    fetcher.ok("get", cid, "-o", str(tmp_path / "out.bin"))
    assert (tmp_path / "out.bin").read_bytes() == src.read_bytes()
    assert f"fetch wrote cid={cid}" in fetcher.log(), "the node wrote the file as it fetched"
    # The content was checked from the chunks as they passed, none read back from disk.
    assert f"content_checked cid={cid} in_order=True read_back=0 " in fetcher.log()
    assert not list(tmp_path.glob(".*hearthfile-tmp"))
    got = shares(fetcher, cid)
    assert set(got) == {h.node_id for h in holders}, f"chunks came from all three: {got}"
    assert sum(got.values()) == 96


def test_source_killed_mid_fetch(
    make_node: Callable[[str], Daemon], tmp_path: Path, proxies: list[Proxy]
) -> None:
    a, b, f = make_node("a"), make_node("b"), make_node("f")
    config = config_for([a, b, f])
    src = write_blob(tmp_path / "src.bin", 32, 2)
    for h in (a, b):
        h.start(config=config)
        cid = h.ok("add", str(src)).split()[-1]
    slow = [Proxy(tmp_path, h.port, 8 * MIB) for h in (a, b)]
    proxies.extend(slow)
    f.start(*(p.port for p in slow), config=config)
    wait_for(lambda: knows(f, cid, [a, b]), 60, "the fetcher to learn both holders")
    getter = f.background("get", cid, "-o", str(tmp_path / "out.bin"))
    wait_for(lambda: held_chunks(f) >= 16, 60, "the fetch to get going")
    a.stop(signal.SIGKILL)
    _, err = getter.communicate(timeout=120)
    assert getter.returncode == 0, err.decode()
    assert (tmp_path / "out.bin").read_bytes() == src.read_bytes()


def test_throttled_source_gets_fewer_chunks(
    make_node: Callable[[str], Daemon], tmp_path: Path, proxies: list[Proxy]
) -> None:
    fast, slow, f = make_node("fast"), make_node("slow"), make_node("f")
    config = config_for([fast, slow, f])
    src = write_blob(tmp_path / "src.bin", 32, 3)
    for h in (fast, slow):
        h.start(config=config)
        cid = h.ok("add", str(src)).split()[-1]
    fast_path = Proxy(tmp_path, fast.port, 20 * MIB)
    slow_path = Proxy(tmp_path, slow.port, 2 * MIB)  # a tenth of the other
    proxies.extend([fast_path, slow_path])
    f.start(fast_path.port, slow_path.port, config=config)
    wait_for(lambda: knows(f, cid, [fast, slow]), 60, "the fetcher to learn both holders")
    f.ok("get", cid, "-o", str(tmp_path / "out.bin"))
    assert (tmp_path / "out.bin").read_bytes() == src.read_bytes()
    got = shares(f, cid)
    # The ratio (about 10:1 here) belongs to scripts/bench_transfer.py; the behaviour
    # is that the slower source is given fewer chunks.
    assert got.get(slow.node_id, 0) < got[fast.node_id], f"shares follow speed: {got}"


def test_kill_9_fetcher_at_half_then_resume(
    make_node: Callable[[str], Daemon], tmp_path: Path, proxies: list[Proxy]
) -> None:
    a, f = make_node("a"), make_node("f")
    config = config_for([a, f])
    src = write_blob(tmp_path / "src.bin", 32, 4)
    a.start(config=config)
    cid = a.ok("add", str(src)).split()[-1]
    path = Proxy(tmp_path, a.port, 8 * MIB)
    proxies.append(path)
    f.start(path.port, config=config)
    wait_for(lambda: knows(f, cid, [a]), 60, "the fetcher to learn the holder")
    getter = f.background("get", cid, "-o", str(tmp_path / "out.bin"))
    wait_for(lambda: held_chunks(f) >= 64, 120, "half the blob to arrive")
    f.stop(signal.SIGKILL)
    getter.communicate(timeout=30)
    verify = json.loads(f.ok("--json", "verify"))
    assert verify["clean"], verify
    kept = held_chunks(f)
    assert 0 < kept < 128, f"the kill landed mid-fetch: {kept} of 128 chunks kept"
    f.start(path.port, config=config)
    wait_for(lambda: f.connected_to(a), 60, "the fetcher to reconnect")
    f.ok("get", cid, "-o", str(tmp_path / "out.bin"))
    assert (tmp_path / "out.bin").read_bytes() == src.read_bytes()
    resumed = sum(shares(f, cid).values())
    assert 0 < resumed <= 128 - kept, f"the resumed fetch moved only what was missing: {resumed}"
    # The content check read back the chunks kept from before the kill, not the blob.
    assert f"content_checked cid={cid} in_order=True read_back={kept} " in f.log()


def test_cat_streams_before_the_fetch_ends(
    make_node: Callable[[str], Daemon], tmp_path: Path, proxies: list[Proxy]
) -> None:
    a, f = make_node("a"), make_node("f")
    config = config_for([a, f])
    src = write_blob(tmp_path / "src.bin", 16, 5)
    a.start(config=config)
    cid = a.ok("add", str(src)).split()[-1]
    path = Proxy(tmp_path, a.port, 4 * MIB)
    proxies.append(path)
    f.start(path.port, config=config)
    wait_for(lambda: knows(f, cid, [a]), 60, "the fetcher to learn the holder")
    cat = f.background("cat", cid, stdout=subprocess.PIPE)
    assert cat.stdout is not None
    first = cat.stdout.read(CS)
    running = json.loads(f.ok("--json", "transfers"))
    assert first == src.read_bytes()[:CS]
    assert [r["cid"] for r in running] == [cid], "bytes came out while the fetch still ran"
    rest = cat.stdout.read()
    assert cat.wait(60) == 0
    assert first + rest == src.read_bytes()


async def test_chunk_corruption_falls_over_to_alt_source(
    make_node: Callable[[str], Daemon], tmp_path: Path, proxies: list[Proxy]
) -> None:
    """A holder that serves corrupt chunks is quarantined; the fetch completes from another.

    The honest holder is reached through a 1 MiB/s link (8 s for the blob), so the lying
    one answers the chunks it is given first, on any machine: before, the honest holder
    took every chunk (the liar's too, as late copies) before the liar, an in-test peer
    on a loaded machine, had answered, and nobody was quarantined."""
    key = NodeKey.generate()
    honest, f = make_node("honest"), make_node("f")
    trust = "".join(f"  {n}: member\n" for n in (honest.node_id, f.node_id, key.node_id))
    config = f"gossip:\n  interval_s: 0.3\ntrust:\n{trust}"
    src = write_blob(tmp_path / "src.bin", 8, 6)
    honest.start(config=config)
    cid = honest.ok("add", str(src)).split()[-1]
    slow_link = Proxy(tmp_path, honest.port, 1 * MIB)
    proxies.append(slow_link)
    f.start(slow_link.port, config=config)
    await trio.to_thread.run_sync(lambda: wait_for(lambda: knows(f, cid, [honest]), 60))
    manifest, chunks = chunk_blob(src.read_bytes())
    by_cid = dict(zip(manifest.chunks, chunks, strict=True))

    def corrupt(good: bytes) -> bytes:
        return bytes([good[0] ^ 0xFF]) + good[1:]  # right length, wrong bytes

    async def lying_read(ctx: CallContext) -> dict[str, Any]:
        args = ctx.args
        if args["cid"] != manifest.cid:
            return {"data": corrupt(by_cid[args["cid"]])}
        if args.get("manifest", True) is not False:
            raise ServiceError("not_found", "ask someone else for the manifest")
        for start, stop in args["chunks"]:
            for i in range(start, stop):
                await ctx.send({"i": i, "data": corrupt(chunks[i])})
        return {"chunks": sum(stop - start for start, stop in args["chunks"])}

    registry = Registry()
    registry.register(READ, lying_read)
    with trio.fail_after(120):
        async with connect(f, key, registry) as conn:
            await conn.call("file.advertise", {"cids": [cid]})
            out = tmp_path / "out.bin"
            await trio.to_thread.run_sync(lambda: f.ok("get", cid, "-o", str(out)))
    assert out.read_bytes() == src.read_bytes()
    lines = f.ok("--json", "events").splitlines()
    quarantined = [e for e in map(json.loads, lines) if e["event"] == "source.quarantined"]
    assert [e["node_id"] for e in quarantined] == [str(key.node_id)]
    assert f.cli("verify").returncode == 0


def test_one_origin_four_fetchers_swarm(
    make_node: Callable[[str], Daemon], tmp_path: Path, proxies: list[Proxy]
) -> None:
    """Fetchers serve each other what they already have: the origin uploads well
    under four copies."""
    origin = make_node("origin")
    fetchers = [make_node(f"f{i}") for i in range(4)]
    config = config_for([origin, *fetchers])
    src = write_blob(tmp_path / "src.bin", 32, 7)
    origin.start(config=config)
    cid = origin.ok("add", str(src)).split()[-1]
    uplink = Proxy(tmp_path, origin.port, 16 * MIB)  # the origin's link is the bottleneck
    proxies.append(uplink)
    for i, f in enumerate(fetchers):
        f.start(uplink.port, *fetchers[:i], config=config)
    for f in fetchers:
        wait_for(lambda f=f: knows(f, cid, [origin]), 60, "each fetcher to learn the origin")
        wait_for(
            lambda f=f: sum(p["direction"] != "gossip" for p in f.peers()) >= 4,
            60,
            "each fetcher to connect to the origin and the other fetchers",
        )
    getters = [
        f.background("get", cid, "-o", str(tmp_path / f"out{i}.bin"))
        for i, f in enumerate(fetchers)
    ]
    for getter in getters:
        _, err = getter.communicate(timeout=180)
        assert getter.returncode == 0, err.decode()
    for i in range(4):
        assert (tmp_path / f"out{i}.bin").read_bytes() == src.read_bytes()
    uploaded = sum(int(p["bytes_out"]) for p in origin.peers())  # type: ignore[call-overload]
    copies = uploaded / src.stat().st_size
    # Without swarming every fetcher pulls the whole blob from the origin (3.9 copies
    # measured); with it, 2.3-2.4 on an idle 2-core machine. That figure belongs to the
    # benchmarks; the behaviour checked here is that fetchers served each other.
    from_peers = {
        f.node_id: sum(n for node, n in shares(f, cid).items() if node != origin.node_id)
        for f in fetchers
    }
    assert sum(from_peers.values()) > 0, f"no fetcher got a chunk from another: {from_peers}"
    print(f"origin uploaded {copies:.2f} copies of the blob to 4 fetchers")
