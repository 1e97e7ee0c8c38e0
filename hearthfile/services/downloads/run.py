"""One download from its origin, over httpx (trio shell over ``core`` and ``partial``).

The body gathers in one buffer as it arrives; each group of whole 256 KiB
chunks goes to a writer task, which writes the group with one call in a worker
thread while another thread hashes its chunks and the next group is received,
and makes them durable every ``flush_bytes`` or ``flush_interval_s`` (so a kill
loses at most that tail). A connection that breaks mid-body keeps what arrived and asks
again for the rest (Range + If-Range) up to ``max_retries`` times; what the
origin answers is judged by ``core.decide``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import httpx
import trio

from hearthfile.blobs.chunker import CHUNK_SIZE, Manifest
from hearthfile.blobs.facade import AsyncStore
from hearthfile.config import DownloadsConfig
from hearthfile.services.downloads import core
from hearthfile.services.downloads.core import Action, Record, Validator
from hearthfile.services.downloads.partial import PartialDownload

log = logging.getLogger(__name__)

#: Chunks handed to the writer at once: one thread hop per 8 MiB, not per chunk.
GROUP_CHUNKS = 32


class DownloadFailed(Exception):
    """The download cannot finish: the reason becomes the record's ``error``."""


class _Retry(Exception):
    """A break worth asking again for (the connection dropped mid-body)."""


@dataclass(slots=True)
class Progress:
    """What the run tells its owner: the record as it changes, bytes as they come."""

    save: Callable[[Record], Awaitable[None]]
    received: Callable[[int], None]


class OriginRun:
    """Fetch ``rec.url`` into the store; ``run`` returns the finished manifest."""

    def __init__(
        self,
        rec: Record,
        store: AsyncStore,
        client: httpx.AsyncClient,
        config: DownloadsConfig,
        progress: Progress,
    ) -> None:
        self.rec = rec
        self._store = store
        self._client = client
        self._config = config
        self._progress = progress
        self._partial = PartialDownload(store.sync, rec.name, rec.expect)
        self._tail = bytearray()
        #: Bytes in the store or handed to the writer: the file's bytes before the tail.
        self._handed = 0
        self._finished = False

    @property
    def prefix_cid(self) -> str | None:
        """The prefix blob left once the download finished (the owner drops it)."""
        return self._partial.prefix_cid

    @property
    def offset(self) -> int:
        """Bytes of the file we hold (in the store or in hand)."""
        return self._handed + len(self._tail)

    async def run(self) -> Manifest:
        try:
            return await self._run()
        except Exception:  # any failure: Failed keeps nothing (DESIGN.md section 12)
            with trio.CancelScope(shield=True):
                await self._store.run(self._partial.discard)
            self._finished = True
            raise
        finally:
            if not self._finished:
                # Paused, removed or stopped: keep what arrived for a later resume.
                with trio.CancelScope(shield=True):
                    await self._flush()

    async def _run(self) -> Manifest:
        self._handed = await self._store.run(self._partial.reopen, self.rec.partial_cid)
        retries = 0
        while True:
            try:
                manifest = await self._attempt()
            except _Retry as exc:
                retries += 1
                if retries > self._config.max_retries:
                    raise DownloadFailed(f"{exc} ({retries - 1} retries)") from None
                log.info("download_retry id=%s offset=%d reason=%s", self.rec.id, self.offset, exc)
                continue
            self._finished = True
            return manifest

    async def _attempt(self) -> Manifest:
        offset = self.offset
        headers = core.request_headers(offset, self.rec.validator)
        if offset and "Range" not in headers:
            await self._restart()  # nothing to validate a range with: start over
            offset = 0
        try:
            async with self._client.stream("GET", self.rec.url, headers=headers) as response:
                await self._take(offset, response)
                return await self._receive(response)
        except httpx.TooManyRedirects:
            raise DownloadFailed("too many redirects") from None
        except httpx.UnsupportedProtocol as exc:
            raise DownloadFailed(f"redirected to an unsupported URL: {exc}") from None
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise DownloadFailed(f"cannot connect to the origin: {_reason(exc)}") from None
        except httpx.TransportError as exc:
            raise _Retry(f"connection to the origin broke: {_reason(exc)}") from None

    async def _take(self, offset: int, response: httpx.Response) -> None:
        """Judge the answer's status and headers; restart or fail as ``decide`` says."""
        lower = {k.lower(): v for k, v in response.headers.items()}
        decision = core.decide(
            offset, self.rec.validator, response.status_code, lower, response.reason_phrase
        )
        if decision.action is Action.FAIL:
            raise DownloadFailed(decision.error)
        if decision.action is Action.RETRY_FROM_ZERO:
            await self._restart()
            raise _Retry("the origin's file changed or ignored our range")
        if decision.action is Action.RESTART:
            log.info("download_restart id=%s offset=%d", self.rec.id, offset)
            await self._restart()
        too_big = core.over_limit(decision.size, self._config.max_bytes)
        if too_big:
            raise DownloadFailed(too_big)
        mime = self.rec.mime or core.mime_of(lower.get("content-type"), self.rec.name)
        self.rec = replace(self.rec, size=decision.size, validator=decision.validator, mime=mime)
        await self._progress.save(self.rec)

    async def _restart(self) -> None:
        self._tail.clear()
        self._handed = 0
        await self._store.run(self._partial.discard)
        self.rec = replace(
            self.rec, partial_cid=None, downloaded_bytes=0, validator=Validator(), size=None
        )
        await self._progress.save(self.rec)

    async def _receive(self, response: httpx.Response) -> Manifest:
        send, receive = trio.open_memory_channel[bytearray](1)
        broken: httpx.TransportError | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write, receive)
                async with send:
                    try:
                        await self._read(response, send)
                    except httpx.TransportError as exc:
                        broken = exc  # the writer stores what came before the break
        except BaseExceptionGroup as group:
            raise _single(group) from None
        if broken is not None:
            raise broken
        size = self.offset
        if self.rec.size is not None and size != self.rec.size:
            raise _Retry(f"the origin sent {size} of {self.rec.size} bytes")
        manifest = await self._store.run(self._partial.finish, bytes(self._tail), self.rec.mime)
        self._tail.clear()
        return manifest

    async def _read(
        self, response: httpx.Response, send: trio.MemorySendChannel[bytearray]
    ) -> None:
        cfg = self._config
        group_bytes = CHUNK_SIZE * max(1, min(GROUP_CHUNKS, cfg.flush_bytes // CHUNK_SIZE))
        sent_at = trio.current_time()
        async for piece in response.aiter_raw():
            self._tail += piece
            self._progress.received(len(piece))
            if self.offset > cfg.max_bytes:
                raise DownloadFailed(f"the body passed downloads.max_bytes ({cfg.max_bytes})")
            if len(self._tail) < CHUNK_SIZE:
                continue
            now = trio.current_time()
            if len(self._tail) >= group_bytes or now - sent_at >= cfg.flush_interval_s:
                await send.send(self._cut())
                sent_at = now
        if len(self._tail) >= CHUNK_SIZE:
            await send.send(self._cut())

    def _cut(self) -> bytearray:
        """Hand over the whole chunks received as one buffer; keep the short rest."""
        group = self._tail
        whole = len(group) - len(group) % CHUNK_SIZE
        self._tail = group[whole:]
        del group[whole:]
        self._handed += whole
        return group

    async def _write(self, receive: trio.MemoryReceiveChannel[bytearray]) -> None:
        since_flush = 0
        last_flush = trio.current_time()
        async with receive:
            async for group in receive:
                async with trio.open_nursery() as nursery:
                    # The disk takes the group while its chunks are hashed.
                    nursery.start_soon(self._store.run, self._partial.write, group)
                    await self._store.run(self._partial.hash, group)
                since_flush += len(group)
                due = trio.current_time() - last_flush >= self._config.flush_interval_s
                if since_flush >= self._config.flush_bytes or due:
                    await self._flush()
                    since_flush, last_flush = 0, trio.current_time()

    async def _flush(self) -> None:
        prefix = await self._store.run(self._partial.flush)
        self.rec = replace(self.rec, partial_cid=prefix, downloaded_bytes=self._partial.size)
        await self._progress.save(self.rec)


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one failure inside the reader/writer nursery's group (a full disk in the
    writer, a limit in the reader), so callers see it as itself; a group of several
    (or holding a cancellation) stays a group."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            leaves.append(exc)
    return leaves[0] if len(leaves) == 1 and isinstance(leaves[0], Exception) else group


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__
