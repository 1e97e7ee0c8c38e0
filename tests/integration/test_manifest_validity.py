"""Manifest validity at the put and fetch entry points of a real daemon (DESIGN.md
section 5), and the poison manifest of issue 13 item 1 against a pinned blob."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from hearthfile.blobs.chunker import CHUNK_SIZE, Manifest
from hearthfile.bus.capability import CallContext, Registry
from hearthfile.errors import ServiceError
from hearthfile.identity import NodeKey
from hearthfile.services.file.service import READ
from hearthfile.transfer.fileproto import from_ranges, manifest_items
from tests.integration.nodes import Daemon
from tests.integration.test_file_service import connect, put_call
from tests.unit.test_chunker import payload
from tests.unit.test_manifest_validity import invalid_manifests

CS = CHUNK_SIZE
CASES = sorted(invalid_manifests())


def holds_nothing_of(node: Daemon, cid: str) -> bool:
    return node.cli("stat", cid).returncode == 1 and json.loads(node.ok("--json", "ls")) == []


@pytest.mark.parametrize("case", CASES)
async def test_put_refuses_each_invalid_manifest(
    make_node: Callable[[str], Daemon], case: str
) -> None:
    key = NodeKey.generate()
    node = make_node("n")
    node.ok("trust", str(key.node_id), "--level", "trusted")
    node.start()
    manifest, chunks = invalid_manifests()[case]
    with trio.fail_after(60):
        async with connect(node, key) as conn:
            with pytest.raises(ServiceError) as err:
                await put_call(conn, manifest.encode(), manifest.cid, dict(enumerate(chunks)))
    assert err.value.code == "bad_request"
    assert holds_nothing_of(node, manifest.cid)
    assert node.cli("verify").returncode == 0


async def test_a_poison_put_leaves_the_pinned_blob_whole(
    make_node: Callable[[str], Daemon], tmp_path: Path
) -> None:
    """The attack of issue 13 item 1: a manifest listing a held chunk with a false
    size completed without a byte sent, and its first read destroyed the chunk."""
    key = NodeKey.generate()
    node = make_node("n")
    node.ok("trust", str(key.node_id), "--level", "trusted")
    node.start()
    src = tmp_path / "good.bin"
    src.write_bytes(payload(2 * CS + 7, 41))
    good = node.ok("add", str(src)).split()[-1]
    node.ok("pin", good)
    held = _chunks_of(node, good)
    poison = Manifest(10, CS, (held[0],), held[1])
    with trio.fail_after(60):
        async with connect(node, key) as conn:
            with pytest.raises(ServiceError) as err:
                await put_call(conn, poison.encode(), poison.cid, {})
    assert err.value.code == "bad_request"
    assert node.cli("stat", poison.cid).returncode == 1
    out = tmp_path / "out.bin"
    node.ok("get", good, "-o", str(out))
    assert out.read_bytes() == src.read_bytes()
    assert json.loads(node.ok("--json", "stat", good))["pinned"] is True
    assert node.cli("verify").returncode == 0


def _chunks_of(node: Daemon, cid: str) -> list[str]:
    from hearthfile.blobs.store import BlobStore

    store = BlobStore(node.home / "data", readonly=True)
    try:
        return list(store.read_manifest(cid).chunks)  # type: ignore[arg-type]
    finally:
        store.close()


def hostile_read(manifest: Manifest, chunks: list[bytes]) -> Registry:
    """A member that serves ``manifest`` and these chunks for it, as asked."""

    async def read(ctx: CallContext) -> dict[str, Any]:
        args = ctx.args
        if args["cid"] != manifest.cid:
            return {"data": chunks[manifest.chunks.index(args["cid"])]}
        encoded = manifest.encode()
        if args.get("manifest", True) is not False:
            for n, item in enumerate(manifest_items(encoded)):
                if n == 0:
                    item["manifest_size"] = len(encoded)
                await ctx.send(item)
        wanted = from_ranges(args.get("chunks", [[0, len(chunks)]]), len(chunks))
        for i in sorted(wanted):
            await ctx.send({"i": i, "data": chunks[i]})
        return {"chunks": len(wanted), "have": [[0, len(chunks)]] if chunks else []}

    registry = Registry()
    registry.register(READ, read)
    return registry


async def fetch_from_hostile(
    node: Daemon, key: NodeKey, manifest: Manifest, chunks: list[bytes], out: Path
) -> Any:
    async with connect(node, key, hostile_read(manifest, chunks)) as conn:
        await conn.call("file.advertise", {"cids": [manifest.cid]})
        return await trio.to_thread.run_sync(lambda: node.cli("get", manifest.cid, "-o", str(out)))


@pytest.mark.parametrize("case", CASES)
async def test_fetch_refuses_each_invalid_manifest(
    make_node: Callable[[str], Daemon], tmp_path: Path, case: str
) -> None:
    key = NodeKey.generate()
    node = make_node("n")
    node.start(config=f"trust:\n  {key.node_id}: member\n")
    manifest, chunks = invalid_manifests()[case]
    out = tmp_path / "out.bin"
    with trio.fail_after(120):
        result = await fetch_from_hostile(node, key, manifest, chunks, out)
    assert result.returncode == 1, result.out
    assert not out.exists() or out.stat().st_size == 0
    assert "manifest" in result.stderr or "content" in result.stderr, result.stderr
    assert holds_nothing_of(node, manifest.cid)  # not even a partial blob


async def test_a_poison_fetch_leaves_the_pinned_blob_whole(
    make_node: Callable[[str], Daemon], tmp_path: Path
) -> None:
    """A member advertises a manifest naming a chunk the victim holds, with a false
    size; the victim's get of it fails and its own pinned blob stays whole."""
    key = NodeKey.generate()
    node = make_node("n")
    node.start(config=f"trust:\n  {key.node_id}: member\n")
    src = tmp_path / "good.bin"
    src.write_bytes(payload(2 * CS + 7, 42))
    good = node.ok("add", str(src)).split()[-1]
    node.ok("pin", good)
    held = _chunks_of(node, good)
    poison = Manifest(10, CS, (held[0],), held[1])
    with trio.fail_after(120):
        result = await fetch_from_hostile(node, key, poison, [], tmp_path / "p.bin")
    assert result.returncode == 1
    out = tmp_path / "out.bin"
    node.ok("get", good, "-o", str(out))
    assert out.read_bytes() == src.read_bytes()
    assert json.loads(node.ok("--json", "stat", good))["pinned"] is True
    assert node.cli("verify").returncode == 0
