"""file.* against a real daemon, from a client in the test that can misbehave."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from hearthfile.blobs.chunker import CHUNK_SIZE, chunk_blob
from hearthfile.bus.capability import Registry, TrustLevel
from hearthfile.bus.client import open_secure_channel
from hearthfile.bus.connection import Connection
from hearthfile.bus.session import INITIAL_WINDOW
from hearthfile.cids import Cid, canonical_encode, cid_of, hex_of
from hearthfile.config import Address
from hearthfile.errors import ServiceError
from hearthfile.identity import NodeKey
from hearthfile.transfer.fileproto import manifest_items
from tests.integration.nodes import Daemon
from tests.unit.test_chunker import payload

CS = CHUNK_SIZE


@asynccontextmanager
async def connect(
    node: Daemon, key: NodeKey, registry: Registry | None = None
) -> AsyncIterator[Connection]:
    """A connection to ``node`` as ``key``, serving ``registry`` to it (nothing by default)."""
    address = Address("127.0.0.1", node.port)
    async with open_secure_channel(address, key) as channel:
        conn = Connection(
            channel, registry or Registry(), lambda n: TrustLevel.MEMBER, initiator=True
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(conn.serve)
            yield conn
            nursery.cancel_scope.cancel()


@pytest.fixture
def key() -> NodeKey:
    return NodeKey.generate()


def started(make_node: Callable[[str], Daemon], key: NodeKey, level: str | None) -> Daemon:
    node = make_node("n")
    if level is not None:
        node.ok("trust", str(key.node_id), "--level", level)
    return node.start()


async def put_call(conn: Connection, manifest_bytes: bytes, cid: str, chunks: dict[int, bytes]):  # type: ignore[no-untyped-def]
    args = {"cid": cid, "manifest_size": len(manifest_bytes)}
    async with conn.open_call("file.put", args) as call:
        for item in manifest_items(manifest_bytes):
            await call.send(item)
        missing = [
            i for item in [x async for x in call] for r in item["missing"] for i in range(*r)
        ]
        for index in missing:
            if index in chunks:
                await call.send({"i": index, "data": chunks[index]})
        await call.send_end()
        return missing, await call.result()


async def test_put_with_a_chunk_not_matching_is_refused(make_node, key) -> None:  # type: ignore[no-untyped-def]
    node = started(make_node, key, "trusted")
    manifest, chunks = chunk_blob(payload(2 * CS, 1))
    forged = bytearray(chunks[1])
    forged[0] ^= 1
    with trio.fail_after(30):
        async with connect(node, key) as conn:
            with pytest.raises(ServiceError) as err:
                await put_call(
                    conn, manifest.encode(), manifest.cid, {0: chunks[0], 1: bytes(forged)}
                )
    assert err.value.code == "bad_request"
    assert node.cli("stat", manifest.cid).returncode == 1
    partial = node.home / "data" / "partial" / hex_of(manifest.cid)
    assert not partial.exists() or partial.read_bytes()[CS : 2 * CS] != bytes(forged)


async def test_put_that_lies_about_its_manifest_is_refused(make_node, key) -> None:  # type: ignore[no-untyped-def]
    node = started(make_node, key, "trusted")
    manifest, chunks = chunk_blob(payload(3 * CS, 2))
    fields = {
        "v": 1,
        "size": 10 * CS,
        "chunk_size": CS,
        "chunks": list(manifest.chunks),
        "content": manifest.content,
    }
    lying = canonical_encode(fields)  # size claims 10 chunks, lists 3
    with trio.fail_after(30):
        async with connect(node, key) as conn:
            with pytest.raises(ServiceError) as err:
                await put_call(conn, lying, cid_of(lying), dict(enumerate(chunks)))
            assert err.value.code == "bad_request" and "chunk count" in err.value.detail
            with pytest.raises(ServiceError) as err:  # manifest bytes that do not hash to the CID
                await put_call(conn, manifest.encode(), cid_of(b"other"), {})
            assert err.value.code == "bad_request"
    assert json.loads(node.ok("--json", "ls")) == []


async def test_interrupted_put_is_invisible_then_resumes(make_node, key) -> None:  # type: ignore[no-untyped-def]
    node = started(make_node, key, "trusted")
    manifest, chunks = chunk_blob(payload(24 * CS, 3))
    encoded = manifest.encode()
    with trio.fail_after(60):
        async with (
            connect(node, key) as conn,
            conn.open_call(
                "file.put", {"cid": manifest.cid, "manifest_size": len(encoded)}
            ) as call,
        ):
            for item in manifest_items(encoded):
                await call.send(item)
            async for _ in call:
                pass
            for index in range(20):
                await call.send({"i": index, "data": chunks[index]})
                # Credit flow control: these 20 sends (plus the manifest) returned only
                # once the receiver had consumed all but INITIAL_WINDOW (8) of them.
            # leaving the block mid-stream cancels the call, as a dropped peer would
        assert node.cli("stat", manifest.cid).returncode == 1, "no partial blob is visible"
        assert json.loads(node.ok("--json", "ls")) == []
        async with connect(node, key) as conn:
            missing, result = await put_call(conn, encoded, manifest.cid, dict(enumerate(chunks)))
    consumed_at_least = 20 + 1 - INITIAL_WINDOW - 1  # chunks, not counting the manifest
    assert set(range(20, 24)) <= set(missing) <= set(range(consumed_at_least, 24)), missing
    assert (result["stored"], result["skipped"]) == (len(missing), 24 - len(missing))
    assert node.cli("cat", manifest.cid).stdout == b"".join(chunks)


async def test_member_cannot_put_and_stranger_cannot_advertise(make_node, key) -> None:  # type: ignore[no-untyped-def]
    node = started(make_node, key, None)
    manifest, _ = chunk_blob(payload(CS, 4))
    with trio.fail_after(30):
        async with connect(node, key) as conn:
            for cap, args in [
                ("file.advertise", {"cids": [manifest.cid]}),
                ("file.read", {"cid": manifest.cid}),
                ("file.list", {}),
            ]:
                with pytest.raises(ServiceError) as err:
                    await conn.call(cap, args)
                assert err.value.code == "unauthorized", cap
            # PROTOCOL.md part C: bus.describe lists only what the caller may call.
            shown = {d["name"] for d in await conn.call("bus.describe")}
            assert "bus.describe" in shown and "file.read" not in shown
    node.stop()
    node.ok("trust", str(key.node_id), "--level", "member")
    node.start()
    with trio.fail_after(30):
        async with connect(node, key) as conn:
            with pytest.raises(ServiceError) as err:
                await put_call(conn, manifest.encode(), manifest.cid, {})
            assert err.value.code == "unauthorized"
            assert await conn.call("file.advertise", {"cids": [manifest.cid]}) == {"accepted": 1}


async def test_read_errors_and_corrupt_chunk_never_served(make_node, key, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    node = started(make_node, key, "member")
    src = tmp_path / "f"
    src.write_bytes(payload(3 * CS, 5))
    cid = node.ok("add", str(src)).split()[-1]
    manifest, chunks = chunk_blob(src.read_bytes())
    h = hex_of(Cid(cid))
    with open(node.home / "data" / "blobs" / h[:2] / h, "r+b") as blob_file:
        blob_file.seek(CS)
        blob_file.write(b"\0" * CS)  # chunk 1 corrupt on disk
    with trio.fail_after(30):
        async with connect(node, key) as conn:
            for args, code in [
                ({"cid": "blake3:" + "0" * 64}, "not_found"),
                ({"cid": "blake3:XYZ"}, "bad_request"),
                ({"cid": cid, "chunks": [[2, 9]]}, "bad_request"),
                ({"cid": manifest.chunks[1]}, "not_found"),
                # A blob-only key makes it a blob read, and no blob has a chunk's CID.
                ({"cid": manifest.chunks[0], "have": True}, "not_found"),
            ]:
                with pytest.raises(ServiceError) as err:
                    await conn.call("file.read", args)
                assert err.value.code == code, args
            assert (await conn.call("file.read", {"cid": manifest.chunks[0]}))["data"] == chunks[0]
            received = []
            with pytest.raises(ServiceError) as err:
                async with conn.open_call("file.read", {"cid": cid}) as call:
                    async for item in call:
                        received.append(item)
                    await call.result()
            assert err.value.code == "not_found"
    served = [(item["i"], item["data"]) for item in received if "data" in item]
    assert all(cid_of(data) == manifest.chunks[i] for i, data in served), "no bad bytes served"
    assert 1 not in [i for i, _ in served]
