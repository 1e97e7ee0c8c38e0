"""One download from its origin, over httpx (trio shell over ``core`` and ``partial``).

The body is copied once, as it arrives, into a page-aligned buffer of a small
pool (``Groups``); each group of whole 256 KiB chunks goes both to a writer
task, which writes the buffer with one direct write in a worker thread (no
aligned copy: the buffer already is), and to a hasher task, which hashes its
chunks in another. Neither waits for the other (the disk and the hashes each
go at their own pace, a few groups apart), and the next group is received
meanwhile. The writer makes what it wrote durable every ``flush_bytes`` or
``flush_interval_s`` (so a kill loses at most that tail). A connection that
breaks mid-body keeps what arrived and asks again for the rest (Range +
If-Range) up to ``max_retries`` times; what the origin answers is judged by
``core.decide``.
"""

from __future__ import annotations

import logging
import mmap
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
#: Buffers a download fills in turn: one being filled, the others queued for (or
#: with) the writer and the hasher, which may be a group or two apart.
GROUP_BUFFERS = 4


Queue = trio.MemorySendChannel["Group"]


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
        group_chunks = max(1, min(GROUP_CHUNKS, config.flush_bytes // CHUNK_SIZE))
        self._groups = Groups(CHUNK_SIZE * group_chunks, GROUP_BUFFERS)
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
        return self._handed + self._groups.filled

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
        self._groups.clear()
        self._handed = 0
        await self._store.run(self._partial.discard)
        self.rec = replace(
            self.rec, partial_cid=None, downloaded_bytes=0, validator=Validator(), size=None
        )
        await self._progress.save(self.rec)

    async def _receive(self, response: httpx.Response) -> Manifest:
        to_disk, disk_queue = trio.open_memory_channel[Group](1)
        to_hash, hash_queue = trio.open_memory_channel[Group](1)
        broken: httpx.TransportError | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write, disk_queue)
                nursery.start_soon(self._hash, hash_queue)
                async with to_disk, to_hash:
                    try:
                        await self._read(response, (to_disk, to_hash))
                    except httpx.TransportError as exc:
                        broken = exc  # the writer stores what came before the break
        except BaseExceptionGroup as group:
            raise _single(group) from None
        if broken is not None:
            raise broken
        size = self.offset
        if self.rec.size is not None and size != self.rec.size:
            raise _Retry(f"the origin sent {size} of {self.rec.size} bytes")
        tail = bytes(self._groups.current[: self._groups.filled])
        manifest = await self._store.run(self._partial.finish, tail, self.rec.mime)
        self._groups.clear()
        return manifest

    async def _read(self, response: httpx.Response, queues: tuple[Queue, Queue]) -> None:
        cfg, groups = self._config, self._groups
        sent_at = trio.current_time()
        async for piece in response.aiter_raw():
            self._progress.received(len(piece))
            if self.offset + len(piece) > cfg.max_bytes:
                raise DownloadFailed(f"the body passed downloads.max_bytes ({cfg.max_bytes})")
            view = memoryview(piece)
            while view:
                view = groups.fill(view)
                if groups.full:
                    await self._hand(await self._cut(), queues)
                    sent_at = trio.current_time()
            due = trio.current_time() - sent_at >= cfg.flush_interval_s
            if due and groups.filled >= CHUNK_SIZE:
                await self._hand(await self._cut(), queues)
                sent_at = trio.current_time()
        if groups.filled >= CHUNK_SIZE:
            await self._hand(await self._cut(), queues)

    async def _hand(self, group: Group, queues: tuple[Queue, Queue]) -> None:
        for queue in queues:
            await queue.send(group)

    async def _cut(self) -> Group:
        """Hand over the whole chunks received; their short rest starts the next buffer."""
        group = await self._groups.cut()
        self._handed += group.view.nbytes
        return group

    async def _write(self, receive: trio.MemoryReceiveChannel[Group]) -> None:
        since_flush = 0
        last_flush = trio.current_time()
        async with receive:
            async for group in receive:
                size = group.view.nbytes
                try:
                    await self._store.run(self._partial.write, group.view)
                finally:
                    self._groups.give_back(group)
                since_flush += size
                due = trio.current_time() - last_flush >= self._config.flush_interval_s
                if since_flush >= self._config.flush_bytes or due:
                    await self._flush()
                    since_flush, last_flush = 0, trio.current_time()

    async def _hash(self, receive: trio.MemoryReceiveChannel[Group]) -> None:
        async with receive:
            async for group in receive:
                try:
                    await self._store.run(self._partial.hash, group.view)
                finally:
                    self._groups.give_back(group)

    async def _flush(self) -> None:
        prefix = await self._store.run(self._partial.flush)
        self.rec = replace(self.rec, partial_cid=prefix, downloaded_bytes=self._partial.durable)
        await self._progress.save(self.rec)


@dataclass(slots=True)
class Group:
    """Whole chunks of the body, in order, in one of the pool's buffers."""

    buffer: mmap.mmap
    view: memoryview
    #: The tasks (writer, hasher) not yet done with it.
    users: int = 2


class Groups:
    """The body's bytes not yet handed to the writer, in page-aligned buffers reused in
    turn: one copy per byte from the socket's pieces, none for direct I/O, and no fresh
    pages per group (a fresh page costs more than the copy into it on some VMs)."""

    def __init__(self, size: int, count: int) -> None:
        self._size = size
        self._free_send, self._free = trio.open_memory_channel[mmap.mmap](count)
        for _ in range(count - 1):
            self._free_send.send_nowait(mmap.mmap(-1, size))
        self._buffer = mmap.mmap(-1, size)
        self.current = memoryview(self._buffer)
        #: Bytes of the body in ``current``.
        self.filled = 0

    @property
    def full(self) -> bool:
        return self.filled == self._size

    def fill(self, view: memoryview) -> memoryview:
        """Copy what fits of ``view`` into the current buffer; returns the rest."""
        take = min(view.nbytes, self._size - self.filled)
        self.current[self.filled : self.filled + take] = view[:take]
        self.filled += take
        return view[take:]

    async def cut(self) -> Group:
        """The whole chunks filled, as a group; a free buffer (waiting for the writer
        to give one back) takes the short rest and becomes the current one."""
        whole = self.filled - self.filled % CHUNK_SIZE
        filled = self.current
        group = Group(self._buffer, filled[:whole])
        self._buffer = await self._free.receive()
        self.current = memoryview(self._buffer)
        self.current[: self.filled - whole] = filled[whole : self.filled]
        self.filled -= whole
        return group

    def clear(self) -> None:
        """Forget the bytes not yet cut (the download starts again from zero)."""
        self.filled = 0

    def give_back(self, group: Group) -> None:
        """A task is done with ``group``: once both are, its buffer can be filled again."""
        group.users -= 1
        if not group.users:
            group.view.release()
            self._free_send.send_nowait(group.buffer)


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
