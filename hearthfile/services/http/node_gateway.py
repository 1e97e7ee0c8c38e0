"""``NodeGateway``: the node's side of the HTTP gateway (trio shell over the store).

It implements ``backend.GatewayBackend`` with the blob store, the node's fetch
(the transfer manager: every known holder at once), its event log and status.
Blocking store work runs in worker threads in groups of chunks, so a thread hop
(~0.15 ms) is paid per few MiB, not per chunk (PERF-NOTES.md item 3).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import mimetypes
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import trio

from hearthfile import transfer
from hearthfile.blobs.chunker import BlobError, Manifest
from hearthfile.blobs.store import BlobStore, PinnedError
from hearthfile.cids import Cid
from hearthfile.errors import ServiceError
from hearthfile.events import Counters, EventBus
from hearthfile.services import ops
from hearthfile.services.http.backend import Added, BlobMeta, GatewayError, Metric
from hearthfile.services.results import to_wire
from hearthfile.services.streams import ChannelReader
from hearthfile.transfer.manager import TransferManager

log = logging.getLogger(__name__)

#: Bytes read per worker-thread hop when serving, and handed per hop to an upload.
GROUP_BYTES: Final = 4 * 1024 * 1024
#: Upload blocks queued between the request and the store's writer thread.
SINK_QUEUE: Final = 2
#: Seconds a client waits for a fetch's manifest before 504.
MANIFEST_TIMEOUT_S: Final = 30.0
RETRY_AFTER_S: Final = 5
#: Manifests of local blobs kept between requests, and for how long (see _local_manifest).
MANIFEST_CACHE: Final = 1024
TOUCH_INTERVAL_S: Final = 60.0

Fetch = Callable[[Cid, tuple[int, int] | None, bool, transfer.ProgressFn], Awaitable[Manifest]]
Announce = Callable[[list[Cid], list[Cid]], None]


class NodeGateway:
    def __init__(
        self,
        store: BlobStore,
        *,
        fetch: Fetch,
        announce: Announce,
        status: Callable[[], dict[str, Any]],
        events: EventBus,
        transfers: TransferManager,
        holders: Callable[[Cid], int],
        counters: Counters,
    ) -> None:
        self._store = store
        self._fetch = fetch
        self._announce = announce
        self._status = status
        self._events = events
        self._transfers = transfers
        self._holders = holders
        self._counters = counters
        self._recent: OrderedDict[Cid, _Recent] = OrderedDict()

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn`` in a worker thread; store errors become HTTP errors."""
        try:
            return await trio.to_thread.run_sync(fn, *args)
        except BlobError as exc:
            raise _http_error(exc) from None
        except PinnedError as exc:
            raise GatewayError(409, "pinned", str(exc)) from None

    # -- reads ---------------------------------------------------------------

    async def blob(self, cid: Cid, *, fetch: bool) -> BlobMeta:
        local = await self._local(cid)
        if local is not None:
            return local
        if not fetch:
            raise GatewayError(412, "not_cached", f"{cid} is not held here (only-if-cached)")
        with trio.move_on_after(MANIFEST_TIMEOUT_S) as scope:
            manifest = await self._fetched(cid, (0, 0))
        if scope.cancelled_caught:
            raise GatewayError(
                504, "timeout", f"{cid}: no holder answered", retry_after_s=RETRY_AFTER_S
            )
        return BlobMeta(cid, manifest, manifest.name, manifest.mime, local=False)

    async def _local(self, cid: Cid) -> BlobMeta | None:
        """A complete blob held here, or None.

        Reading a manifest records an access in the index (a durable write, ~10 ms
        here), which would cap small requests near 100/s. So blobs served in the
        last ``TOUCH_INTERVAL_S`` are kept: while the index has not changed since
        (``store.generation``), no thread hop at all; after a change, one indexed
        lookup (complete? name? mime?). The access time GC goes by stays within
        that interval.
        """
        now = time.monotonic()
        entry = self._recent.get(cid)
        if entry is not None and now - entry.since > TOUCH_INTERVAL_S:
            entry = None
        if entry is not None and entry.generation == self._store.generation:
            self._recent.move_to_end(cid)
            return entry.meta
        known = entry.meta.manifest if entry is not None else None
        found: tuple[BlobMeta, int] | None = await self._run(self._check_local, cid, known)
        if found is None:
            self._recent.pop(cid, None)
            return None
        meta, generation = found
        self._recent[cid] = _Recent(meta, generation, entry.since if entry else now)
        self._recent.move_to_end(cid)
        while len(self._recent) > MANIFEST_CACHE:
            self._recent.popitem(last=False)
        return meta

    def _check_local(self, cid: Cid, known: Manifest | None) -> tuple[BlobMeta, int] | None:
        generation = self._store.generation  # read before the query: see BlobStore
        try:
            info = self._store.stat(cid)
        except BlobError:
            return None
        if not info.complete:
            return None
        manifest = known or self._store.read_manifest(cid)
        return BlobMeta(cid, manifest, info.name, info.mime, local=True), generation

    async def _fetched(
        self, cid: Cid, span: tuple[int, int] | None, progress: transfer.ProgressFn | None = None
    ) -> Manifest:
        try:
            return await self._fetch(cid, span, True, progress or (lambda p: None))
        except ServiceError as exc:
            if exc.code == "not_found" and self._holders(cid):
                raise GatewayError(
                    502,
                    "unavailable",
                    f"{cid}: no known holder answered",
                    retry_after_s=RETRY_AFTER_S,
                ) from None
            raise _fetch_error(cid, exc) from None

    async def read(
        self, meta: BlobMeta, start: int, end: int, write: Callable[[memoryview], Awaitable[None]]
    ) -> None:
        with self._store.using(meta.cid):  # no GC of a blob being served
            if meta.local:
                await self._read_local(meta, start, end, write)
            else:
                await self._read_fetching(meta, start, end, write)

    async def _read_local(
        self, meta: BlobMeta, start: int, end: int, write: Callable[[memoryview], Awaitable[None]]
    ) -> None:
        """A small range in one worker-thread hop; a large one from the store's
        read-ahead stream, ``GROUP_BYTES`` per hop."""
        if end - start <= GROUP_BYTES:
            data: memoryview = await self._run(_read_small, self._store, meta.manifest, start, end)
            await write(data)
            return
        pieces: Iterator[memoryview] = await self._run(
            self._store.read_blob_stream, meta.cid, start, end
        )
        try:
            while True:
                group: list[memoryview] = await self._run(_take, pieces, GROUP_BYTES)
                if not group:
                    return
                for piece in group:
                    await write(piece)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_close, pieces)

    async def _read_fetching(
        self, meta: BlobMeta, start: int, end: int, write: Callable[[memoryview], Awaitable[None]]
    ) -> None:
        """Fetch the chunks covering [start, end) in order and write each as it is
        stored (verified twice: by the fetch, then by the store's read)."""
        manifest = meta.manifest
        indices = list(manifest.chunk_range(start, end))
        span = None if (start, end) == (0, manifest.size) else (start, end)
        landed = trio.Event()
        outcome: list[BaseException | None] = []

        def progress(_: transfer.Progress) -> None:
            landed.set()

        async def fetch() -> None:
            try:
                await self._fetched(meta.cid, span, progress)
                outcome.append(None)
            except Exception as exc:  # reported to the request below
                outcome.append(exc)
            landed.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch)
            sent = 0
            while sent < len(indices):
                landed = trio.Event()
                ready = await self._run(self._ready, manifest, indices[sent:])
                for index, data in ready:
                    base = index * manifest.chunk_size
                    view = memoryview(data)[max(start - base, 0) : min(end - base, len(data))]
                    await write(view)
                    sent += 1
                if sent < len(indices) and not ready:
                    if outcome:
                        if outcome[0] is not None:
                            raise outcome[0]
                        raise GatewayError(502, "partition", f"{meta.cid}: chunks still missing")
                    await landed.wait()

    def _ready(self, manifest: Manifest, indices: list[int]) -> list[tuple[int, bytes]]:
        """The first of ``indices`` that are stored, in order, up to ``GROUP_BYTES``."""
        wanted = [manifest.chunks[i] for i in indices[: GROUP_BYTES // manifest.chunk_size]]
        present = self._store.present_chunks(wanted)
        run = list(itertools.takewhile(lambda i: manifest.chunks[i] in present, indices))
        run = run[: len(wanted)]
        return list(zip(run, self._store.read_chunks(manifest, run), strict=True))

    async def chunk(self, cid: Cid) -> bytes:
        data: bytes = await self._run(self._store.read_chunk, cid)
        return data

    async def manifest_bytes(self, cid: Cid) -> bytes:
        manifest: Manifest = await self._run(self._store.read_manifest, cid)
        return manifest.encode()

    async def list_blobs(self, prefix: str, after: str, limit: int) -> list[dict[str, Any]]:
        infos = await self._run(lambda: self._store.list_cids(prefix, after=after, limit=limit))
        return [to_wire(ops.entry(i)) for i in infos]

    # -- writes --------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def open_sink(self, name: str | None, mime: str | None) -> AsyncIterator[_Sink]:
        """A blob added from bytes written to the sink, in a worker thread that
        chunks, hashes and stores them as they come (memory: a few blocks)."""
        mime = mime or (mimetypes.guess_type(name)[0] if name else None)
        send, receive = trio.open_memory_channel[bytes](SINK_QUEUE)
        reader = ChannelReader(receive)
        sink = _Sink(send, self._announce)

        def add() -> Manifest:
            return self._store.add_stream(reader, name=name, mime=mime, pin=True)  # type: ignore[arg-type]

        async def writer() -> None:
            try:
                sink.manifest = await self._run(add)
            except GatewayError as exc:
                sink.error = exc
            finally:
                sink.done.set()
                receive.close()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            try:
                yield sink
            finally:
                if not sink.finished:
                    reader.aborted = True
                    send.close()

    async def plan(self, manifest: Manifest) -> list[int]:
        present: set[Cid] = await self._run(self._store.present_chunks, manifest.chunks)
        return [i for i, c in enumerate(manifest.chunks) if c not in present]

    async def put_chunk(self, cid: Cid, data: bytes) -> None:
        await self._run(self._store.write_chunk, cid, data)

    async def commit(self, manifest: Manifest) -> Added:
        missing = await self.plan(manifest)
        if missing:
            raise GatewayError(409, "chunks_missing", f"{len(missing)} chunks not uploaded yet")
        await self._run(self._commit, manifest)
        self._announce([manifest.cid], [])
        return _added(manifest)

    def _commit(self, manifest: Manifest) -> None:
        """Record the manifest; the store makes the blob visible only once its
        ``content`` matched the whole bytes (DESIGN.md section 5), and keeps
        nothing of a false one."""
        self._store.begin_blob(manifest, origin="added")
        if not self._store.complete_blob(manifest.cid):
            self._store.discard_partial(manifest.cid)
            raise GatewayError(409, "chunks_missing", "a chunk went missing before the commit")
        self._store.pin(manifest.cid)

    async def remove(self, cid: Cid) -> None:
        await self._run(lambda: self._store.remove(cid))
        self._announce([], [cid])

    async def set_pin(self, cid: Cid, pinned: bool) -> None:
        await self._run(self._store.pin if pinned else self._store.unpin, cid)

    # -- node ----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return self._status()

    def metrics(self) -> list[Metric]:
        counted = self._counters.snapshot()
        samples = [
            Metric("store_blobs", "gauge", "Complete blobs held.", self._store.count()),
            Metric("store_bytes", "gauge", "Bytes held in the store.", self._store.total_bytes()),
            Metric("events_total", "counter", "Node events recorded.", self._events.last_id),
        ]
        for key, (name, kind, help_) in _COUNTERS.items():
            samples.append(Metric(name, kind, help_, counted.get(key, 0)))
        return samples

    def events_since(self, after: int) -> list[dict[str, Any]]:
        return [_event_json(e.to_wire()) for e in self._events.recorded(after)]

    async def wait_events(self, after: int) -> None:
        await self._events.wait_since(after, math.inf)


#: The node's Counters as Prometheus samples: field -> (name, kind, help). Base units,
#: ``_total`` on counters, no CID or peer labels.
_COUNTERS: Final[dict[str, tuple[str, str, str]]] = {
    "bytes_served": ("served_bytes_total", "counter", "Chunk bytes served to peers."),
    "bytes_fetched": ("fetched_bytes_total", "counter", "Chunk bytes fetched from peers."),
    "bytes_uploaded": ("pushed_bytes_total", "counter", "Bytes pushed to peers."),
    "failed_hash_bytes": ("failed_hash_bytes_total", "counter", "Bytes that failed their hash."),
    "redundant_bytes": ("redundant_bytes_total", "counter", "Bytes fetched twice (endgame)."),
    "sources_quarantined": ("sources_quarantined_total", "counter", "Sources quarantined."),
    "transfers_done": ("transfers_done_total", "counter", "Fetches completed."),
    "transfers_failed": ("transfers_failed_total", "counter", "Fetches failed."),
    "transfers_active": ("transfers_active", "gauge", "Fetches under way."),
    "gc_evictions": ("gc_evictions_total", "counter", "Blobs evicted by GC."),
    "gossip_records": ("gossip_records_total", "counter", "Gossip records accepted."),
    "gossip_rejected": ("gossip_records_rejected_total", "counter", "Gossip records rejected."),
    "peers_connected": ("peers_connected", "gauge", "Peers connected now."),
}


@dataclass(frozen=True, slots=True)
class _Recent:
    meta: BlobMeta
    generation: int
    since: float


class _Sink:
    """The request side of an upload: bytes gathered into blocks of ``GROUP_BYTES``."""

    def __init__(self, send: trio.MemorySendChannel[bytes], announce: Announce) -> None:
        self._send = send
        self._announce = announce
        self._buffer = bytearray()
        self.finished = False
        self.done = trio.Event()
        self.manifest: Manifest | None = None
        self.error: GatewayError | None = None

    async def write(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= GROUP_BYTES:
            await self._put(bytes(self._buffer))
            self._buffer.clear()

    async def _put(self, block: bytes) -> None:
        try:
            await self._send.send(block)
        except trio.BrokenResourceError:  # the writer stopped: its error says why
            await self.done.wait()
            raise self.error or GatewayError(500, "internal", "upload writer stopped") from None

    async def finish(self) -> Added:
        if self._buffer:
            await self._put(bytes(self._buffer))
        self.finished = True
        await self._send.aclose()
        await self.done.wait()
        if self.manifest is None:
            raise self.error or GatewayError(500, "internal", "upload writer stopped")
        self._announce([self.manifest.cid], [])
        return _added(self.manifest)


def _read_small(store: BlobStore, manifest: Manifest, start: int, end: int) -> memoryview:
    indices = list(manifest.chunk_range(start, end))
    data = b"".join(store.read_chunks(manifest, indices))
    base = indices[0] * manifest.chunk_size
    return memoryview(data)[start - base : end - base]


def _take(pieces: Iterator[memoryview], budget: int) -> list[memoryview]:
    group: list[memoryview] = []
    size = 0
    for piece in pieces:
        group.append(piece)
        size += len(piece)
        if size >= budget:
            break
    return group


def _close(pieces: Iterator[memoryview]) -> None:
    close = getattr(pieces, "close", None)
    if close is not None:
        close()


def _added(manifest: Manifest) -> Added:
    return Added(manifest.cid, manifest.size, manifest.name, manifest.mime, manifest.content)


def _event_json(event: dict[str, Any]) -> dict[str, Any]:
    data = {k: v for k, v in event.items() if k not in ("seq", "at", "event")}
    return {"id": event["seq"], "time": event["at"], "type": event["event"], "data": data}


def _http_error(exc: BlobError) -> GatewayError:
    if exc.code == "not_found":
        return GatewayError(404, "not_found", exc.detail)
    if exc.code in ("manifest_invalid", "hash_mismatch"):
        return GatewayError(400, exc.code, exc.detail)
    if exc.code == "disk_full":
        return GatewayError(507, "disk_full", exc.detail)
    return GatewayError(500, exc.code, exc.detail)


def _fetch_error(cid: Cid, exc: ServiceError) -> GatewayError:
    """The transfer manager's wire error as the status DESIGN.md section 10 names."""
    if exc.code == "not_found":
        return GatewayError(404, "not_found", f"{cid}: no holder known")
    if exc.code == "timeout":
        return GatewayError(504, "timeout", exc.detail, retry_after_s=RETRY_AFTER_S)
    if exc.code == "capacity_exceeded":
        return GatewayError(507, "disk_full", exc.detail)
    return GatewayError(502, exc.code, exc.detail, retry_after_s=RETRY_AFTER_S)
