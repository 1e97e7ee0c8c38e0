"""Fetching a blob from several peers at once (trio shell).

``fetch_blob`` gets a verified manifest, records it as a partial blob, then
pulls the missing chunks from its sources with ``file.read`` and stores each
one after checking it against the manifest; it commits every few tens of MiB
so a fetch interrupted at any point resumes where its last commit left off and
never trusts anything it did not verify. Which chunk comes from which source,
and when, is decided by the pure ``FetchSchedule`` (transfer/schedule.py). The
writer also feeds each verified chunk to an ``InOrderHash`` (transfer/contenthash.py),
so the manifest's ``content`` is checked at completion without reading the blob back.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

import trio

from hearthfile import events
from hearthfile.blobs.chunker import BlobError, Manifest
from hearthfile.blobs.facade import AsyncStore, holding_blob
from hearthfile.blobs.store import BlobStore, WriteBatch
from hearthfile.cids import Cid, cid_of
from hearthfile.errors import PeerUnavailable, ServiceError, collapse
from hearthfile.events import Publish, TransferShares
from hearthfile.identity import NodeId
from hearthfile.transfer.contenthash import InOrderHash
from hearthfile.transfer.fileproto import (
    bad,
    from_ranges,
    to_ranges,
    want_map,
)
from hearthfile.transfer.manifests import manifest_from_any
from hearthfile.transfer.peer import Peer, Progress, ProgressFn, bytes_of
from hearthfile.transfer.schedule import (
    ORDER_WINDOW,
    Cancel,
    FailReason,
    FetchFailed,
    FetchSchedule,
    ScheduleConfig,
    SourceQuarantined,
    SourceStalled,
    windowed_order,
)
from hearthfile.transfer.sink import CHUNKS_PER_HOP, COMMIT_BYTES

log = logging.getLogger(__name__)

#: A fetch commits what it has verified every ``COMMIT_BYTES`` or this many seconds,
#: whichever comes first: what a crash (kill -9) can cost the resume.
COMMIT_INTERVAL_S: Final = 1.0
#: How often a running fetch looks for more sources (swarming: other fetchers).
SOURCE_REFRESH_S: Final = 0.25
#: How long the writer waits after a chunk for more to store in the same thread hop.
GATHER_S: Final = 0.005
#: Chunks read back per writer hop for the in-order content hash (chunks held before
#: the fetch began, or not kept in memory): 16 MiB, a few tens of ms of reading.
READ_BACK_PER_HOP: Final = 64


@dataclass(frozen=True, slots=True)
class ChunkStored:
    """A chunk from ``source`` hashed to its CID and is written."""

    source: NodeId
    index: int
    nbytes: int


@dataclass(frozen=True, slots=True)
class ChunkFailed:
    source: NodeId
    index: int
    reason: FailReason


@dataclass(frozen=True, slots=True)
class SourceGone:
    """The connection to ``source`` broke while ``index`` was asked of it."""

    source: NodeId
    index: int


@dataclass(frozen=True, slots=True)
class SourcesJoined:
    """New sources or have-maps arrived: wakes the loop to hand out requests."""


_Result = ChunkStored | ChunkFailed | SourceGone | SourcesJoined


@holding_blob
async def fetch_blob(
    store: BlobStore,
    cid: Cid,
    sources: Sequence[Peer],
    *,
    progress: ProgressFn | None = None,
    span: tuple[int, int] | None = None,
    publish: Publish = lambda event: None,
    more_sources: MoreSources | None = None,
    sequential: bool = False,
) -> Manifest:
    """Make ``cid`` complete in ``store`` (or, with ``span``, the chunks covering
    bytes [start, end)), fetching what it lacks from all ``sources`` at once.

    ``more_sources()`` is asked every ``SOURCE_REFRESH_S`` while the fetch runs;
    what it returns joins the fetch (other nodes that fetched the blob meanwhile,
    or are fetching it: a source lacking a chunk answers not_found, which costs
    that chunk no attempt). ``sequential`` takes chunks in order, for output that
    streams while the fetch runs; otherwise in a random order within windows of
    ``ORDER_WINDOW`` chunks (so the content is hashed as the chunks pass), spread
    over the whole blob once another fetcher of it shows up as a source, so that
    nodes fetching the same blob at once hold different chunks and serve each other
    (their content check then reads back most of the blob)."""
    astore = AsyncStore(store)
    if await astore.has_blob(cid):
        return await astore.read_manifest(cid)
    if not sources:
        raise ServiceError("not_found", f"{cid}: no known source")
    manifest = await _known_manifest(astore, cid)
    if manifest is None:
        manifest = await manifest_from_any(cid, sources)
        await astore.begin_blob(manifest)
    missing, state = await _plan(astore, manifest, span, len(sources))
    if progress is not None:
        progress(state)
    # The content is hashed as the chunks pass (a whole fetch of something missing);
    # otherwise complete_blob reads the blob back to check it.
    content = InOrderHash(len(manifest.chunks), missing) if missing and span is None else None
    if missing:
        fetch = _ScheduledFetch(
            astore, manifest, sources, missing, state, progress, publish, sequential, content
        )
        try:
            await fetch.run(more_sources)
        except ServiceError:
            if fetch.manifest_false is None:
                raise
            await astore.run(store.discard_partial, cid)  # nothing of it is kept
            raise ServiceError("bad_request", f"{cid}: {fetch.manifest_false}") from None
        content = fetch.content
    complete = await _complete(astore, manifest, content)
    if span is None and not complete:
        raise ServiceError("partition", f"{cid}: chunks still missing after the fetch")
    return manifest


async def _plan(
    astore: AsyncStore, manifest: Manifest, span: tuple[int, int] | None, sources: int
) -> tuple[list[int], Progress]:
    """The chunks this fetch must get (those missing, within ``span``), and its
    progress before the first arrives."""
    missing = await astore.missing_chunks(manifest.cid)
    wanted = len(manifest.chunks)
    if span is not None:
        covering = manifest.chunk_range(*span)
        missing = [i for i in missing if i in covering]  # a range: O(1)
        wanted = len(covering)
    done_bytes = manifest.size - bytes_of(manifest, missing)
    state = Progress(
        manifest.cid, manifest.size, done_bytes, wanted, wanted - len(missing), sources
    )
    return missing, state


async def _complete(astore: AsyncStore, manifest: Manifest, content: InOrderHash | None) -> bool:
    """Make the blob complete if every chunk is stored, its content checked against the
    in-order hash when there is one (else by reading the blob back); whether it is."""
    if content is None:
        return await astore.complete_blob(manifest.cid)
    hashed = await astore.run(_hash_rest, astore.sync, manifest, content)
    complete = await astore.complete_blob(manifest.cid, hashed=hashed)
    log.info(
        "content_checked cid=%s in_order=%s read_back=%d peak_kept_mib=%.1f",
        manifest.cid,
        hashed is not None,
        content.read_back,
        content.peak_kept_bytes / 2**20,
    )
    return complete


def _hash_rest(store: BlobStore, manifest: Manifest, content: InOrderHash) -> bytes | None:
    """Once the fetch has committed its last chunk: read back what the content hash
    still lacks and return the blob's hash (None if a chunk cannot be read: the
    completion then checks the content by reading the whole blob)."""
    content.committed()
    try:
        while due := content.reads_due(READ_BACK_PER_HOP):
            for index, data in zip(due, store.read_chunks(manifest, due), strict=True):
                content.add(index, data)
    except BlobError:
        return None
    return content.digest()


async def _known_manifest(store: AsyncStore, cid: Cid) -> Manifest | None:
    try:
        return await store.read_manifest(cid)
    except ServiceError as exc:
        if exc.code == "not_found":
            return None
        raise


_FAIL_REASONS: Final[dict[str, FailReason]] = {"not_found": "not_found", "timeout": "timeout"}


class _ScheduledFetch:
    """The trio side of one multi-source fetch: ``FetchSchedule`` decides, this moves.

    One task per run of requests to a source (a streamed ``file.read`` of the run's
    chunks, or a unary read of a lone chunk CID), one writer task that verifies and
    stores arrivals a group per thread hop and commits every ``COMMIT_BYTES`` or
    ``COMMIT_INTERVAL_S``, and this loop feeding outcomes back to the schedule and
    acting on its requests and events.
    """

    def __init__(
        self,
        store: AsyncStore,
        manifest: Manifest,
        sources: Sequence[Peer],
        missing: list[int],
        state: Progress,
        progress: ProgressFn | None,
        publish: Publish,
        sequential: bool,
        content: InOrderHash | None,
    ) -> None:
        self.store, self.manifest, self.state = store, manifest, state
        self.progress, self.publish = progress, publish
        self.fetched_bytes = self.redundant_bytes = self.failed_hash_bytes = 0
        self.peers = {p.peer: p for p in sources}
        self.complete_sources: set[NodeId] = set()
        rng = random.Random()
        order = None if sequential else windowed_order(missing, ORDER_WINDOW, rng)
        self.sched: FetchSchedule[NodeId] = FetchSchedule(
            len(manifest.chunks),
            manifest.chunk_length,
            missing,
            rng,
            ScheduleConfig(spread_in_swarm=True),
            order=order,
        )
        now = trio.current_time()
        for node in self.peers:
            self.sched.add_source(node, now)
        self.scopes: dict[tuple[NodeId, int], trio.CancelScope] = {}
        self.results_send, self.results = trio.open_memory_channel[_Result](math.inf)
        self.to_write, self.writes = trio.open_memory_channel[_Arrival](math.inf)
        #: Why the manifest is false, once a chunk's bytes proved it (``_wrong_length``).
        self.manifest_false: str | None = None
        #: Fed by the writer; None once a chunk could not be read back for it.
        self.content = content

    async def run(self, more_sources: MoreSources | None) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer)
                if more_sources is not None:
                    nursery.start_soon(self._refresh_sources, more_sources)
                try:
                    await self._loop(nursery)
                finally:
                    nursery.cancel_scope.cancel()
                    self.to_write.close()  # the writer stores what arrived, then ends
                    for scope in self.scopes.values():
                        scope.cancel()
        except ExceptionGroup as group:
            raise collapse(group) from None  # a failed fetch is its ServiceError, not a group
        shares = {str(n): s.chunks for n, s in self.sched.stats().items()}
        log.info(
            "fetch_shares cid=%s %s",
            self.manifest.cid,
            " ".join(f"{n[:12]}={c}" for n, c in shares.items()),
        )
        self.publish(
            TransferShares(
                self.manifest.cid,
                shares,
                self.fetched_bytes,
                self.redundant_bytes,
                self.failed_hash_bytes,
            )
        )

    async def _loop(self, nursery: trio.Nursery) -> None:
        sched = self.sched
        while True:
            self._handle_events()
            if sched.outcome == "complete":
                return
            now = trio.current_time()
            runs: dict[NodeId, list[int]] = {}
            for request in sched.next_requests(now):
                runs.setdefault(request.source, []).append(request.index)
            for node, indices in runs.items():
                # One call per source per round: a streamed read of all its chunks
                # costs far less per chunk than a call each (one frame, one task).
                scope = trio.CancelScope()
                for index in indices:
                    self.scopes[(node, index)] = scope
                if len(indices) == 1:
                    nursery.start_soon(self._request, node, indices[0], scope)
                else:
                    nursery.start_soon(self._request_run, node, sorted(indices), scope)
            deadline = sched.next_deadline(now)
            done = self.state.chunks_done
            with trio.move_on_at(math.inf if deadline is None else deadline):
                self._record(await self.results.receive())
            self._record_ready()
            if self.progress is not None and self.state.chunks_done != done:
                self.progress(self.state)
            sched.tick(trio.current_time())

    def _record_ready(self) -> None:
        """Record every outcome already waiting, so a writer's group of chunks costs
        one turn of the loop (one wait, one cancel scope, one round of requests, one
        progress report)."""
        while True:
            try:
                result = self.results.receive_nowait()
            except trio.WouldBlock:
                return
            self._record(result)

    async def _refresh_sources(self, more_sources: MoreSources) -> None:
        """New sources join; every source's have-map is re-read, so a holder that
        lacked a chunk (it was fetching too) is asked again once it has it."""
        while True:
            await trio.sleep(SOURCE_REFRESH_S)
            states = {node: stats.state for node, stats in self.sched.stats().items()}
            for peer in await more_sources():
                node = peer.peer
                if self.peers.get(node) is peer and states.get(node) != "removed":
                    continue  # the same live connection, in the fetch already
                # New, or a connection that replaces one that dropped: the schedule takes
                # it back (a quarantined source stays out).
                self.peers[node] = peer
                self.sched.add_source(node, trio.current_time())
                self.state.sources = len(self.peers)
            async with trio.open_nursery() as nursery:
                for node, peer in list(self.peers.items()):
                    if node not in self.complete_sources:
                        nursery.start_soon(self._read_have, peer)
            self.results_send.send_nowait(SourcesJoined())

    async def _read_have(self, peer: Peer) -> None:
        try:
            answer = await peer.call(
                "file.read",
                {"cid": self.manifest.cid, "have": True},
                timeout_s=SOURCE_REFRESH_S * 5,
            )
            have = from_ranges(want_map(answer).get("have"), len(self.manifest.chunks))
        except (ServiceError, PeerUnavailable):
            return
        if len(have) == len(self.manifest.chunks):
            self.complete_sources.add(peer.peer)  # holds it all: no need to ask again
        self.sched.source_has(peer.peer, have)

    def _record(self, result: _Result) -> None:
        if isinstance(result, SourcesJoined):
            return  # only wakes the loop, which hands the new source requests
        now = trio.current_time()
        node, index = result.source, result.index
        if isinstance(result, ChunkFailed) and result.reason == "bad_bytes":
            self.failed_hash_bytes += self.manifest.chunk_length(index)
        if self.scopes.pop((node, index), None) is None:
            # Cancelled (an endgame loser): the schedule has forgotten it.
            if isinstance(result, ChunkStored):
                self.redundant_bytes += result.nbytes
            return
        if isinstance(result, ChunkStored):
            self.sched.chunk_arrived(node, index, result.nbytes, now)
            self.fetched_bytes += result.nbytes
            self.state.chunks_done += 1
            self.state.done_bytes += result.nbytes
        elif isinstance(result, SourceGone):
            self.sched.remove_source(node, now)
        else:
            self.sched.chunk_failed(node, index, result.reason, now)

    def _handle_events(self) -> None:
        for event in self.sched.take_events():
            if isinstance(event, Cancel):
                scope = self.scopes.pop((event.source, event.index), None)
                if scope is not None and scope not in self.scopes.values():
                    scope.cancel()  # the last chunk of its run: stop the call
            elif isinstance(event, FetchFailed):
                cid = self.manifest.chunks[event.index]
                code = "partition" if event.reason == "attempts" else "unavailable"
                raise ServiceError(
                    code,
                    f"chunk {event.index} ({cid}) failed "
                    f"{event.failures} times; no source delivered it",
                )
            elif isinstance(event, SourceQuarantined):
                log.warning(
                    "source_quarantined peer=%s chunk=%d", event.source.short(), event.index
                )
                self.publish(events.SourceQuarantined(event.source, self.manifest.cid, event.index))
            elif isinstance(event, SourceStalled):
                log.info("source_stalled peer=%s", event.source.short())

    async def _request(self, node: NodeId, index: int, scope: trio.CancelScope) -> None:
        with scope:
            try:
                answer = await self.peers[node].call(
                    "file.read", {"cid": self.manifest.chunks[index]}
                )
            except PeerUnavailable:
                self.results_send.send_nowait(SourceGone(node, index))
                return
            except ServiceError as exc:
                reason = _FAIL_REASONS.get(exc.code, "error")
                self.results_send.send_nowait(ChunkFailed(node, index, reason))
                return
            data = answer.get("data") if isinstance(answer, dict) else None
            if not isinstance(data, bytes) or len(data) != self.manifest.chunk_length(index):
                self._wrong_length(node, index, data)
                return
            self._store_later(node, index, data)

    async def _request_run(self, node: NodeId, indices: list[int], scope: trio.CancelScope) -> None:
        """Ask ``node`` for these chunks in one streamed ``file.read``; each arrival
        goes to the writer, and whatever the call leaves undelivered fails."""
        pending = set(indices)
        reason: FailReason | None = "error"  # None: the source is gone
        args = {"cid": self.manifest.cid, "chunks": to_ranges(indices), "manifest": False}
        with scope:
            try:
                async with self.peers[node].open_call("file.read", args) as call:
                    async for item in call:
                        self._arrived(node, pending, item)
                    await call.result()
            except PeerUnavailable:
                reason = None
            except ServiceError as exc:
                reason = _FAIL_REASONS.get(exc.code, "error")
            for index in sorted(pending):
                self.results_send.send_nowait(
                    SourceGone(node, index) if reason is None else ChunkFailed(node, index, reason)
                )

    def _arrived(self, node: NodeId, pending: set[int], item: object) -> None:
        entry = want_map(item, "stream item")
        index, data = entry.get("i"), entry.get("data")
        if not isinstance(index, int) or index not in pending:
            raise bad(f"{node.short()} sent chunk {index!r}, which was not asked for")
        pending.discard(index)
        if not isinstance(data, bytes) or len(data) != self.manifest.chunk_length(index):
            self._wrong_length(node, index, data)
        else:
            self._store_later(node, index, data)

    def _wrong_length(self, node: NodeId, index: int, data: object) -> None:
        """Bytes that are not the manifest's length for the chunk fail it; bytes that
        hash to the chunk's CID nonetheless prove the manifest false (DESIGN.md 5)."""
        if isinstance(data, bytes) and cid_of(data) == self.manifest.chunks[index]:
            self.manifest_false = (
                f"invalid manifest: chunk {index} holds {len(data)} bytes, the manifest "
                f"gives it {self.manifest.chunk_length(index)}"
            )
        self.results_send.send_nowait(ChunkFailed(node, index, "bad_bytes"))

    def _store_later(self, node: NodeId, index: int, data: bytes) -> None:
        """Hand a chunk to the writer; one that lands after the fetch has ended (a
        duplicate still in flight when the last chunk was stored) is dropped."""
        with contextlib.suppress(trio.ClosedResourceError):
            self.to_write.send_nowait((node, index, data))

    async def _writer(self) -> None:
        """Verify and store arrivals, a group per thread hop; report each outcome."""
        batch = self.store.sync.batch()
        committed_at = trio.current_time()
        try:
            async for first in self.writes:
                group = [first]
                await self._gather(group)
                good = await self.store.run(self._write_group, batch, group)
                for (node, index, data), ok in zip(group, good, strict=True):
                    self.results_send.send_nowait(
                        ChunkStored(node, index, len(data))
                        if ok
                        else ChunkFailed(node, index, "bad_bytes")
                    )
                due = trio.current_time() >= committed_at + COMMIT_INTERVAL_S
                if batch.bytes_written >= COMMIT_BYTES or due:
                    await self.store.run(batch.commit)
                    if self.content is not None:
                        self.content.committed()
                    batch = self.store.sync.batch()
                    committed_at = trio.current_time()
        finally:
            # Every chunk in the batch was verified: keep them, even when interrupted.
            with trio.CancelScope(shield=True):
                await self.store.run(batch.commit)

    async def _gather(self, group: list[_Arrival]) -> None:
        """Add arrivals to ``group`` until it holds ``CHUNKS_PER_HOP`` or ``GATHER_S``
        has passed: chunks arrive one at a time, and without the wait nearly every
        group is a single chunk, so a thread hop (which costs more than storing the
        chunk) per chunk."""
        with trio.move_on_after(GATHER_S):
            while len(group) < CHUNKS_PER_HOP:
                try:
                    group.append(await self.writes.receive())
                except trio.EndOfChannel:
                    return

    def _write_group(self, batch: WriteBatch, group: list[_Arrival]) -> list[bool]:
        chunks = self.manifest.chunks
        good = [cid_of(data) == chunks[index] for _node, index, data in group]
        stored = [(index, data) for (_n, index, data), ok in zip(group, good, strict=True) if ok]
        batch.write_chunks(self.manifest, stored)
        if self.content is not None:
            self._hash_in_order(stored)
        return good

    def _hash_in_order(self, stored: list[tuple[int, bytes]]) -> None:
        """Feed the content hash the chunks just stored, and read back (up to
        ``READ_BACK_PER_HOP``) the ones held before the fetch that it has reached."""
        content = self.content
        assert content is not None
        if self.sched.spread:  # chunks come in no order now: holding them is no use
            content.keep_none()
        for index, data in stored:
            content.add(index, data)
        due = content.reads_due(READ_BACK_PER_HOP)
        if not due:
            return
        try:
            back = self.store.sync.read_chunks(self.manifest, due)
        except BlobError:  # gone or corrupt since: completion reads the whole blob
            self.content = None
            return
        for index, data in zip(due, back, strict=True):
            content.add(index, data)


_Arrival = tuple[NodeId, int, bytes]
MoreSources = Callable[[], Awaitable[Sequence[Peer]]]
