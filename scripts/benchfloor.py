"""The floor of a fetch: what hearthfile's wire and store cost with no protocol around them.

Two processes move one blob, held in a hearthfile store, the way a source daemon and a
fetcher daemon move it, minus everything that is not moving bytes:

- the sender reads the blob's chunks with the store's own ``read_chunks`` (direct I/O,
  each chunk re-hashed), the next group of eight read in a thread while the last is
  sent; packs each chunk in a msgpack map as a stream item is packed; encrypts it as
  the secure channel does (AES-256-GCM pieces of at most 65,535 bytes, each with its
  length) and sends it as one websocket message, server -> client;
- the receiver decrypts, unpacks, and hands the chunks in groups of up to eight to a
  thread that checks each against its CID and writes it as the store's layout does:
  ``v2`` (the store's own) at its offset in one file of the blob's size
  (``BlobFile.write_at``: direct I/O for whole chunks), then one ``fsync``; ``v1``
  (the layout before it) a file per chunk, then one ``sync``, as a commit did.

Left out: the Noise handshake (one per connection), requests, credit, the fetch
schedule, the index and its journal. What the floor takes is what any implementation
of this design in Python pays on the machine; hearthfile's own fetch is measured
against it in the same run. The receiver removes what it wrote after each round
(untimed), so later rounds reuse inodes as a
fetcher that dropped the blob does.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

import msgpack
import trio
import trio_websocket
from benchbase import connect_baseline, serve_baseline

from hearthfile.blobs.files import BlobFile
from hearthfile.blobs.store import BlobStore
from hearthfile.bus import wsframe
from hearthfile.bus.client import send_frame
from hearthfile.bus.handshake import SecureSession
from hearthfile.bus.noise import CipherState
from hearthfile.cids import Cid, cid_of, hex_of

GROUP = 8
#: One key for both directions: a benchmark of the cipher's cost, not a channel.
KEY = bytes(range(32))


def _session() -> SecureSession:
    return SecureSession(CipherState(KEY), CipherState(KEY), 1024 * 1024)


async def run_floor_server(data_dir: str, cid: str) -> None:
    """Send the blob ``cid`` of the store at ``data_dir`` to each client that asks."""
    store = BlobStore(Path(data_dir), readonly=True)
    manifest = store.read_manifest(Cid(cid))
    count = len(manifest.chunks)

    async def handle(ws: trio_websocket.WebSocketConnection) -> None:
        await ws.get_message()
        session = _session()
        send, receive = trio.open_memory_channel[tuple[list[int], list[bytes]]](1)

        async def read_ahead() -> None:
            async with send:
                for start in range(0, count, GROUP):
                    group = list(range(start, min(start + GROUP, count)))
                    chunks = await trio.to_thread.run_sync(store.read_chunks, manifest, group)
                    await send.send((group, chunks))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_ahead)
            async for group, chunks in receive:
                for index, data in zip(group, chunks, strict=True):
                    frame = msgpack.packb(
                        {"t": "data", "id": 1, "item": {"i": index, "data": data}}
                    )
                    wire = session.encrypt_frame(frame, headroom=wsframe.HEADROOM)
                    await send_frame(ws, wsframe.frame_in_place(wire, None))
        await ws.get_message()  # "done"

    await serve_baseline(handle)


async def run_floor_client(
    port: int, source_dir: str, cid: str, out_dir: str, layout: str = "v2"
) -> None:
    """Fetch the blob once into ``out_dir`` in the given layout; print JSON: seconds
    and CPU from request to the flush, and peak RSS."""
    source = BlobStore(Path(source_dir), readonly=True)
    manifest = source.read_manifest(Cid(cid))
    source.close()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    blob = BlobFile(str(out / "blob"), write=True, direct=True, size=manifest.size)
    session = _session()
    send, receive = trio.open_memory_channel[tuple[int, bytes]](64)

    def write_group(group: list[tuple[int, bytes]]) -> None:
        for index, data in group:
            chunk = manifest.chunks[index]
            if cid_of(data) != chunk:
                raise SystemExit(f"floor: chunk {index} does not match its CID")
            if layout == "v2":
                blob.write_at(index * manifest.chunk_size, data)
            else:
                path = out / hex_of(chunk)
                tmp = out / f"{hex_of(chunk)}.tmp"
                tmp.write_bytes(data)
                tmp.rename(path)

    def flush() -> None:
        blob.sync() if layout == "v2" else os.sync()

    async def writer() -> None:
        async for first in receive:
            group = [first]
            while len(group) < GROUP:
                try:
                    group.append(receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            await trio.to_thread.run_sync(write_group, group)

    async with trio.open_nursery() as nursery:
        ws = await connect_baseline(nursery, port)
        started, cpu = time.perf_counter(), time.process_time()
        async with trio.open_nursery() as inner:
            inner.start_soon(writer)
            async with send:
                await ws.send_message("go")
                for _ in manifest.chunks:
                    frame = msgpack.unpackb(session.decrypt_frame(await ws.get_message()))
                    item = frame["item"]
                    await send.send((item["i"], item["data"]))
        await trio.to_thread.run_sync(flush)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        await ws.send_message("done")
        await ws.aclose()
    blob.close()
    for leftover in out.iterdir():
        leftover.unlink()
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": elapsed, "cpu": cpu, "rss_kib": rss_kib}), flush=True)
