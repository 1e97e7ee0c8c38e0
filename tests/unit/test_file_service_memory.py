"""FileService: a peer that opens many reads and never takes the answers pins a bounded
number of chunk groups in memory, and does not hold back other peers (trio, real store,
callers faked: the point is a caller that never grants credit)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from hearthfile.blobs.chunker import CHUNK_SIZE, Manifest
from hearthfile.blobs.facade import AsyncStore
from hearthfile.blobs.store import BlobStore
from hearthfile.bus.capability import TrustLevel
from hearthfile.identity import NodeId, NodeKey
from hearthfile.services.file.service import CHUNKS_PER_HOP, GROUPS_PER_PEER, FileService
from tests.unit.test_chunker import payload


class StuckCaller:
    """A file.read caller that never grants credit: every ``send`` waits forever."""

    stuck = 0

    def __init__(self, peer: NodeId, args: dict[str, Any]) -> None:
        self.peer, self.args = peer, args
        self.trust, self.version = TrustLevel.MEMBER, (1, 0)

    async def send(self, item: Any) -> None:
        StuckCaller.stuck += 1
        await trio.sleep_forever()

    async def send_end(self) -> None:
        pass


async def test_a_peer_that_never_reads_pins_a_bounded_number_of_groups(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "data")
    manifest = store.add_bytes(payload(2 * CHUNKS_PER_HOP * CHUNK_SIZE))
    groups_read = 0
    real_read = store.read_chunks

    def counting_read(m: Manifest, indices: list[int]) -> list[bytes]:
        nonlocal groups_read
        groups_read += 1
        return real_read(m, indices)

    store.read_chunks = counting_read  # type: ignore[method-assign]
    service = FileService(AsyncStore(store), record_sources=lambda node, cids: None)
    hostile, other = NodeKey.generate().node_id, NodeKey.generate().node_id
    calls = 3 * GROUPS_PER_PEER
    args = {"cid": manifest.cid, "manifest": False}
    StuckCaller.stuck = 0
    try:
        async with trio.open_nursery() as nursery:
            for _ in range(calls):
                nursery.start_soon(service.handle_read, StuckCaller(hostile, args))
            with trio.fail_after(20):
                # Every call is either stuck sending or waiting for a place.
                while (
                    StuckCaller.stuck + service._holding(hostile).statistics().tasks_waiting < calls
                ):
                    await trio.sleep(0.01)
            assert (StuckCaller.stuck, groups_read) == (GROUPS_PER_PEER, GROUPS_PER_PEER)
            nursery.start_soon(service.handle_read, StuckCaller(other, args))
            with trio.fail_after(20):
                while StuckCaller.stuck < GROUPS_PER_PEER + 1:
                    await trio.sleep(0.01)
            assert groups_read == GROUPS_PER_PEER + 1, "another peer is served at once"
            nursery.cancel_scope.cancel()
    finally:
        store.close()
