"""FileService: the have-map of a partial blob is read from the index once per store
commit, however often a swarm asks, and is never stale (trio, real store)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hearthfile.blobs.chunker import CHUNK_SIZE, chunk_blob
from hearthfile.blobs.facade import AsyncStore
from hearthfile.blobs.store import BlobStore
from hearthfile.bus.capability import TrustLevel
from hearthfile.identity import NodeKey
from hearthfile.services.file.service import FileService
from tests.unit.test_chunker import payload


class Caller:
    def __init__(self, args: dict[str, Any]) -> None:
        self.peer, self.args = NodeKey.generate().node_id, args
        self.trust, self.version = TrustLevel.MEMBER, (1, 0)


async def test_partial_have_map_is_read_once_per_commit_and_follows_changes(
    tmp_path: Path,
) -> None:
    manifest, chunks = chunk_blob(payload(6 * CHUNK_SIZE))
    store = BlobStore(tmp_path / "data")
    store.begin_blob(manifest)
    store.write_chunk(manifest.chunks[1], chunks[1])
    passes = 0
    real_missing = store.missing_chunks

    def counting_missing(cid: Any) -> list[int]:
        nonlocal passes
        passes += 1
        return real_missing(cid)

    store.missing_chunks = counting_missing  # type: ignore[method-assign]
    service = FileService(AsyncStore(store), record_sources=lambda node, cids: None)

    async def have() -> Any:
        return (await service.handle_read(Caller({"cid": manifest.cid, "have": True})))["have"]

    assert await have() == [[1, 2]]
    assert await have() == [[1, 2]]
    assert passes == 1

    with store.batch() as batch:  # one commit: both chunks show at once
        batch.write_chunk(manifest.chunks[2], chunks[2])
        batch.write_chunk(manifest.chunks[4], chunks[4])
    assert await have() == [[1, 3], [4, 5]]
    assert passes == 2

    store.write_chunk(manifest.chunks[0], chunks[0])
    assert await have() == [[0, 3], [4, 5]]
    assert await have() == [[0, 3], [4, 5]]
    assert passes == 3
