"""Pushing a blob to a peer: the caller's side of the two-phase ``file.put`` (trio shell)."""

from __future__ import annotations

from dataclasses import dataclass

from hearthfile.blobs.facade import AsyncStore
from hearthfile.blobs.store import BlobStore
from hearthfile.cids import Cid
from hearthfile.errors import ServiceError
from hearthfile.transfer.fileproto import from_ranges, manifest_items, want_int, want_map
from hearthfile.transfer.peer import Peer, Progress, ProgressFn, bytes_of
from hearthfile.transfer.sink import CHUNKS_PER_HOP


@dataclass(frozen=True, slots=True)
class PushResult:
    cid: Cid
    sent: int
    skipped: int
    bytes_sent: int = 0


async def push_blob(
    store: BlobStore, cid: Cid, target: Peer, *, progress: ProgressFn | None = None
) -> PushResult:
    """Offer ``cid`` to ``target`` with file.put; send only the chunks it lacks."""
    astore = AsyncStore(store)
    manifest = await astore.read_manifest(cid)
    if not await astore.has_blob(cid):
        raise ServiceError("not_found", f"{cid} is not complete here")
    encoded = manifest.encode()
    args = {"cid": cid, "manifest_size": len(encoded), "name": manifest.name, "mime": manifest.mime}
    async with target.open_call("file.put", args) as call:
        for item in manifest_items(encoded):
            await call.send(item)
        missing: list[int] = []
        async for item in call:
            missing.extend(from_ranges(want_map(item).get("missing"), len(manifest.chunks)))
        state = Progress(cid, bytes_of(manifest, missing), 0, len(missing), 0, 1)
        for start in range(0, len(missing), CHUNKS_PER_HOP):
            group = missing[start : start + CHUNKS_PER_HOP]
            chunks = await astore.read_chunks(manifest, group)
            for index, data in zip(group, chunks, strict=True):
                await call.send({"i": index, "data": data})
                state.chunks_done += 1
                state.done_bytes += len(data)
            if progress is not None:
                progress(state)
        await call.send_end()
        result = want_map(await call.result(), "result")
    return PushResult(
        cid,
        want_int(result.get("stored"), "stored"),
        want_int(result.get("skipped"), "skipped"),
        state.done_bytes,
    )
