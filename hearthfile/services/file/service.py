"""FileService: file.read, file.list, file.advertise, file.put (trio shell).

The handlers validate what the peer sent (``transfer.fileproto``), move the
blocking store work to worker threads a group of chunks at a time (a thread hop
costs about as much as hashing a chunk, PERF-NOTES.md), and answer in the
shapes of docs/PROTOCOL.md "File service".

file.put is two-phase, after the dedup upload of the seed documents: the caller
sends the manifest; we record it as a partial blob and answer with the chunk
indices we lack; the caller streams only those; each is verified against the
manifest and stored; the blob becomes visible only when every chunk is in. A
put that stops half way leaves an invisible partial blob whose stored chunks
the next put of the same blob skips.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from typing import Any, Final

import trio

from hearthfile.blobs.chunker import Manifest
from hearthfile.blobs.facade import AsyncStore
from hearthfile.bus.capability import CallContext, CapabilityDescriptor, Registry, TrustLevel
from hearthfile.cids import Cid
from hearthfile.errors import ServiceError
from hearthfile.identity import NodeId
from hearthfile.transfer.fileproto import (
    MAX_ADVERTISE_CIDS,
    MAX_LIST_LIMIT,
    MAX_RANGES_PER_ITEM,
    ManifestReceiver,
    bad,
    manifest_items,
    optional_text,
    range_items,
    read_selection,
    to_ranges,
    want_cid,
    want_int,
    want_map,
)
from hearthfile.transfer.sink import ChunkSink

log = logging.getLogger(__name__)

#: Decoded manifests kept in memory (a 1 GiB blob's is about 300 KB).
MANIFEST_CACHE: Final = 32
#: Chunks read or written per worker-thread hop.
CHUNKS_PER_HOP: Final = 8
#: Groups of chunks one peer's reads may hold in memory at once: a peer that opens
#: many file.read calls and never reads the answers pins 8 MiB here, not 64 calls'
#: worth. Honest fetchers keep two or three calls to a holder going.
GROUPS_PER_PEER: Final = 4

READ = CapabilityDescriptor(
    name="file.read",
    version=(1, 0),
    trust_required=TrustLevel.MEMBER,
    # Fetchers pipeline one call per chunk across sources (DESIGN.md section 7),
    # so the seed's 8 concurrent reads would throttle a single fetch.
    max_concurrent=64,
    timeout_seconds=300,
    idempotent=True,
    request_schema={
        "cid": "CID",
        "chunks?": "[[start, stop], ...]",
        "range?": "[start, end)",
        "have?": "true: only the have-map",
    },
    response_schema={
        "data?": "bytes (chunk CID)",
        "chunks?": "int (blob CID)",
        "have?": "ranges held",
    },
    stream_schema={"items": "{manifest: bytes}..., {i: int, data: bytes}..., end"},
)
LIST = CapabilityDescriptor(
    name="file.list",
    version=(1, 0),
    trust_required=TrustLevel.MEMBER,
    # A get of many CIDs asks every peer for each; the seed's 4 answered busy.
    max_concurrent=32,
    timeout_seconds=5,
    idempotent=True,
    request_schema={
        "prefix?": "text",
        "after?": "CID",
        "limit?": f"1..{MAX_LIST_LIMIT}",
        "partial?": "bool",
    },
    response_schema={"items": "[{cid, size, pinned, complete}]", "next": "CID or nil"},
)
ADVERTISE = CapabilityDescriptor(
    name="file.advertise",
    version=(1, 0),
    trust_required=TrustLevel.MEMBER,
    max_concurrent=16,
    timeout_seconds=5,
    idempotent=True,
    request_schema={"cids": f"[CID] (at most {MAX_ADVERTISE_CIDS})"},
    response_schema={"accepted": "int"},
)
PUT = CapabilityDescriptor(
    name="file.put",
    version=(1, 0),
    trust_required=TrustLevel.TRUSTED,
    max_concurrent=2,
    timeout_seconds=600,
    idempotent=True,
    request_schema={"cid": "CID", "manifest_size": "int", "name?": "text", "mime?": "text"},
    response_schema={"cid": "CID", "stored": "int", "skipped": "int"},
    stream_schema={
        "caller": "{manifest: bytes}..., {i: int, data: bytes}..., end",
        "callee": "{missing: [[start, stop], ...]}..., end",
    },
)

#: ``file.read`` keys that only a blob read takes.
BLOB_ONLY_KEYS: Final = frozenset({"chunks", "range", "manifest", "have"})


class FileService:
    def __init__(
        self,
        store: AsyncStore,
        *,
        record_sources: Callable[[NodeId, list[Cid]], None],
        on_stored: Callable[[Cid], None] = lambda cid: None,
        on_served: Callable[[int], None] = lambda nbytes: None,
        min_free_bytes: int = 1 << 30,
    ) -> None:
        """``on_served(nbytes)`` counts the chunk bytes sent to peers (metrics)."""
        self._store = store
        self._record_sources = record_sources
        self._on_stored = on_stored
        self._on_served = on_served
        self._min_free_bytes = min_free_bytes
        self._manifests: dict[Cid, Manifest] = {}  # insertion order is recency
        #: Have-maps of partial blobs, with the store generation they were read at.
        self._partial_haves: dict[Cid, tuple[int, list[list[int]]]] = {}
        self._held: dict[NodeId, trio.CapacityLimiter] = {}

    def register(self, registry: Registry) -> None:
        registry.register(READ, self.handle_read)
        registry.register(LIST, self.handle_list)
        registry.register(ADVERTISE, self.handle_advertise)
        registry.register(PUT, self.handle_put)

    # -- file.read -------------------------------------------------------------

    async def handle_read(self, ctx: CallContext) -> dict[str, Any]:
        args = want_map(ctx.args)
        cid = want_cid(args.get("cid"))
        # A blob-only key makes it a blob read: no chunk lookup, no thread hop for it.
        if not BLOB_ONLY_KEYS & args.keys():
            data = await self._store.run(self._chunk_or_none, cid)  # one hop per chunk read
            if data is not None:
                self._on_served(len(data))
                return {"data": data}
        if args.get("have") is True:
            return {"have": await self._store.run(self._have, cid)}
        manifest = self._manifests.get(cid) or await self._store.read_manifest(cid)
        self._remember(manifest)
        wanted = read_selection(args, manifest)
        encoded = manifest.encode() if args.get("manifest", True) is not False else b""
        for n, item in enumerate(manifest_items(encoded) if encoded else ()):
            if n == 0:
                item.update(manifest_size=len(encoded), name=manifest.name, mime=manifest.mime)
            await ctx.send(item)
        with self._store.sync.using(cid):  # no GC of a blob being served
            await self._send_chunks(ctx, manifest, wanted)
        return {"chunks": len(wanted), "have": await self._store.run(self._have, cid)}

    async def _send_chunks(self, ctx: CallContext, manifest: Manifest, wanted: list[int]) -> None:
        for start in range(0, len(wanted), CHUNKS_PER_HOP):
            group = wanted[start : start + CHUNKS_PER_HOP]
            async with self._holding(ctx.peer):
                chunks = await self._store.read_chunks(manifest, group)
                for index, data in zip(group, chunks, strict=True):
                    await ctx.send({"i": index, "data": data})
                    self._on_served(len(data))

    def _holding(self, peer: NodeId) -> trio.CapacityLimiter:
        """The peer's ``GROUPS_PER_PEER`` places for chunks read and not yet sent
        (kept per member: only members may read)."""
        limiter = self._held.get(peer)
        if limiter is None:
            limiter = self._held[peer] = trio.CapacityLimiter(GROUPS_PER_PEER)
        return limiter

    def _have(self, cid: Cid) -> list[list[int]]:
        """The chunks held, as ranges, from the index alone (asked often: no manifest
        read, no access-time write). Lets a fetcher draw on a holder that is itself
        still fetching (swarming)."""
        store = self._store.sync
        info = store.stat(cid)
        count = info.chunk_count
        if info.complete:  # the usual answer, without a pass over the blob's chunks
            return [[0, count]] if count else []
        # A swarm asks for a partial blob's have-map many times a second, and it
        # changes only when the store commits: one pass over its chunks per commit.
        generation = store.generation
        cached = self._partial_haves.get(cid)
        if cached is None or cached[0] != generation:
            missing = set(store.missing_chunks(cid))
            held = to_ranges(i for i in range(count) if i not in missing)
            cached = (generation, held[:MAX_RANGES_PER_ITEM])
        _keep_recent(self._partial_haves, cid, cached)
        return cached[1]

    def _remember(self, manifest: Manifest) -> None:
        """Keep recently read manifests: fetchers ask for runs of chunks of the same
        blob many times, and a large manifest costs milliseconds to read and check."""
        _keep_recent(self._manifests, manifest.cid, manifest)

    def _chunk_or_none(self, cid: Cid) -> bytes | None:
        """The chunk's bytes, or None when ``cid`` is not a chunk held here."""
        store = self._store.sync
        return store.read_chunk(cid) if store.has_chunk(cid) else None

    # -- file.list / file.advertise -------------------------------------------

    async def handle_list(self, ctx: CallContext) -> dict[str, Any]:
        args = want_map(ctx.args if ctx.args is not None else {})
        prefix = args.get("prefix", "")
        after = args.get("after", "")
        if not isinstance(prefix, str) or len(prefix) > 71 or not isinstance(after, str):
            raise bad("prefix and after are text (at most a CID long)")
        limit = want_int(args.get("limit", MAX_LIST_LIMIT), "limit", 1, MAX_LIST_LIMIT)
        partial = args.get("partial", False) is True
        infos = await self._store.list_cids(
            prefix, after=after[:71], limit=limit + 1, complete_only=not partial
        )
        more = len(infos) > limit
        items = [
            {"cid": i.cid, "size": i.size, "pinned": i.pinned, "complete": i.complete}
            for i in infos[:limit]
        ]
        return {"items": items, "next": items[-1]["cid"] if more else None}

    async def handle_advertise(self, ctx: CallContext) -> dict[str, Any]:
        args = want_map(ctx.args)
        cids = args.get("cids")
        if not isinstance(cids, list) or len(cids) > MAX_ADVERTISE_CIDS:
            raise bad(f"cids must be a list of at most {MAX_ADVERTISE_CIDS} CIDs")
        valid = [want_cid(c, "cids[]") for c in cids]
        # The source is the authenticated caller, never a NodeID named in the body.
        self._record_sources(ctx.peer, valid)
        return {"accepted": len(valid)}

    # -- file.put --------------------------------------------------------------

    async def handle_put(self, ctx: CallContext) -> dict[str, Any]:
        args = want_map(ctx.args)
        cid = want_cid(args.get("cid"))
        with self._store.sync.using(cid):  # no GC of the partial blob mid-put
            return await self._put(ctx, args, cid)

    async def _put(self, ctx: CallContext, args: dict[str, Any], cid: Cid) -> dict[str, Any]:
        receiver = ManifestReceiver(cid, args.get("manifest_size"))  # type: ignore[arg-type]
        name = optional_text(args.get("name"), "name")
        mime = optional_text(args.get("mime"), "mime")
        incoming = ctx.incoming()
        manifest: Manifest | None = None
        async for item in incoming:
            manifest = receiver.feed(item)
            if manifest is not None:
                break
        if manifest is None:
            raise bad("stream ended before the manifest was whole")
        manifest = Manifest(
            manifest.size, manifest.chunk_size, manifest.chunks, manifest.content, name, mime
        )
        missing = await self._store.run(self._prepare_put, manifest)
        for item in range_items(to_ranges(missing), "missing"):
            await ctx.send(item)
        await ctx.send_end()
        sink = ChunkSink(self._store.sync, manifest, set(missing))
        try:
            async with sink:
                async for item in incoming:
                    await sink.accept(item)
        except ServiceError:
            if sink.manifest_invalid:  # nothing of a false manifest is kept
                await self._store.run(self._store.sync.discard_partial, cid)
            raise
        stored = sink.stored
        if not await self._store.complete_blob(cid):
            raise bad("stream ended before every missing chunk was sent")
        await self._store.pin(cid)  # a blob pushed to us is the pusher's to keep (DESIGN.md 3)
        log.info(
            "put stored blob %s from %s (%d chunks sent, %d skipped)",
            cid,
            ctx.peer.short(),
            stored,
            len(manifest.chunks) - stored,
        )
        self._on_stored(cid)
        return {"cid": cid, "stored": stored, "skipped": len(manifest.chunks) - stored}

    def _prepare_put(self, manifest: Manifest) -> list[int]:
        """Record the manifest as a partial blob; refuse if the disk would run low."""
        store = self._store.sync
        if not store.has_blob(manifest.cid):
            store.begin_blob(manifest, origin="pushed")
        missing = store.missing_chunks(manifest.cid)
        incoming = sum(manifest.chunk_length(i) for i in missing)
        free = shutil.disk_usage(store.data_dir).free
        if free - incoming < self._min_free_bytes:
            raise ServiceError(
                "capacity_exceeded",
                f"storing {incoming} bytes would leave less than {self._min_free_bytes} free",
            )
        return missing


def _keep_recent(cache: dict[Cid, Any], key: Cid, value: Any) -> None:
    """Put ``key`` last in ``cache`` (insertion order is recency); drop the oldest
    entries beyond ``MANIFEST_CACHE``."""
    cache.pop(key, None)
    cache[key] = value
    while len(cache) > MANIFEST_CACHE:
        del cache[next(iter(cache))]
