"""The node's fetches and pushes: admission, sharing, events (trio shell).

``TransferManager`` is what the node service asks to fetch or push a blob. A
fetch of a blob already complete here answers at once. Otherwise it joins the
fetch of the same blob and span already under way (``Transfers``), or leads a
new one once one of ``max_concurrent`` slots is free (``limits.max_concurrent_fetches``:
each fetch already fans out over many sources, so more at once only splits the
same bandwidth and memory). A leading fetch finds its sources (``SourceFinder``),
tells members it is fetching, runs ``fetch_blob``, and reports the outcome as a
typed event; a complete blob is announced to gossip.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import trio

from hearthfile import events
from hearthfile.blobs.chunker import BlobError, Manifest
from hearthfile.blobs.facade import AsyncStore, service_error
from hearthfile.cids import Cid
from hearthfile.errors import PeerUnavailable, ServiceError
from hearthfile.events import Publish
from hearthfile.identity import NodeId
from hearthfile.transfer.fetch import fetch_blob
from hearthfile.transfer.peer import Progress, ProgressFn
from hearthfile.transfer.push import PushResult, push_blob
from hearthfile.transfer.running import Span, Transfers
from hearthfile.transfer.sources import SourceFinder

log = logging.getLogger(__name__)

Announce = Callable[[list[Cid], list[Cid]], None]


class TransferManager:
    def __init__(
        self,
        store: AsyncStore,
        finder: SourceFinder,
        publish: Publish,
        announce: Announce,
        *,
        max_concurrent: int,
    ) -> None:
        """``announce(added, removed)`` tells gossip what the node now holds."""
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self._store = store
        self._finder = finder
        self._publish = publish
        self._announce = announce
        self._running = Transfers()
        self._slots = trio.Semaphore(max_concurrent)

    def snapshot(self) -> list[Progress]:
        return self._running.snapshot()

    def cancel(self, cid: Cid) -> bool:
        return self._running.cancel(cid)

    async def fetch(self, cid: Cid, span: Span, sequential: bool, progress: ProgressFn) -> Manifest:
        """Make ``cid`` (or the chunks covering ``span``) complete here."""
        if await self._store.has_blob(cid):
            return await self._store.read_manifest(cid)
        job = functools.partial(self._admitted, cid, span, sequential)
        return await self._running.run(cid, span, job, progress)

    async def _admitted(
        self, cid: Cid, span: Span, sequential: bool, progress: ProgressFn
    ) -> Manifest:
        async with self._slots:
            return await self._fetch_now(cid, span, sequential, progress)

    async def _fetch_now(
        self, cid: Cid, span: Span, sequential: bool, progress: ProgressFn
    ) -> Manifest:
        started = trio.current_time()
        self._publish(events.TransferStarted(cid))
        # How the fetch ended if not done: cancelled unless an exception says otherwise.
        failure: events.Event | None = events.TransferCancelled(cid)
        try:
            found = await self._finder.find(cid)
            await self._finder.tell_fetching(cid)
            manifest = await fetch_blob(
                self._store.sync,
                cid,
                found,
                progress=progress,
                span=span,
                publish=self._publish,
                more_sources=functools.partial(self._finder.known, cid),
                sequential=sequential,
            )
            failure = None
        except Exception as exc:
            failure = failed(cid, exc)
            raise
        finally:
            if failure is not None:
                self._publish(failure)
        seconds = trio.current_time() - started
        log.info(
            "fetched cid=%s size=%d sources=%d span=%s seconds=%.3f",
            cid, manifest.size, len(found), span, seconds,
        )  # fmt: skip
        self._publish(events.TransferDone(cid, manifest.size, len(found), seconds))
        if span is None:
            self._announce([cid], [])
        return manifest

    async def push(self, cid: Cid, target_text: str, progress: ProgressFn) -> PushResult:
        """Offer ``cid`` to the node ``target_text``; it takes the chunks it lacks."""
        try:
            target = NodeId.parse(target_text)
        except ValueError as exc:
            raise ServiceError("bad_request", str(exc)) from None
        conn = await self._finder.connect(target)
        if conn is None:
            raise ServiceError("unavailable", f"cannot reach {target_text}")
        try:
            result = await push_blob(self._store.sync, cid, conn, progress=progress)
        except PeerUnavailable:
            raise ServiceError("unavailable", f"lost {target_text} during the push") from None
        log.info(
            "pushed cid=%s peer=%s sent=%d skipped=%d",
            cid, target.short(), result.sent, result.skipped,
        )  # fmt: skip
        self._publish(
            events.BlobPushed(cid, target, result.sent, result.skipped, result.bytes_sent)
        )
        return result


def failed(cid: Cid, exc: Exception) -> events.TransferFailed:
    """The event of a fetch that ``exc`` ended, with the wire code its caller sees."""
    if isinstance(exc, BlobError):
        exc = service_error(exc)
    if isinstance(exc, ServiceError):
        return events.TransferFailed(cid, exc.code, exc.detail)
    if isinstance(exc, PeerUnavailable):
        return events.TransferFailed(cid, "unavailable", str(exc))
    return events.TransferFailed(cid, "internal", type(exc).__name__)
