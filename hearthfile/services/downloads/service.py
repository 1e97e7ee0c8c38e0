"""The download cache of a node: the queue, the runs, the records (trio shell).

``Downloads`` owns every record (in memory, written through to ``RecordBook``
on each change) and starts runs as ``core.to_start`` allows. A run writes the
fields it owns (size, validator, mime, bytes stored, prefix blob) through
``_update``; the status is the service's alone, so a pause that lands while a
run flushes is never undone by the run. ``register`` offers the node.download*
capabilities the CLI uses; ``services/downloads/routes.py`` offers the same
over HTTP.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Final

import httpcore
import httpx
import trio

from hearthfile.blobs.chunker import Manifest
from hearthfile.blobs.facade import AsyncStore
from hearthfile.blobs.store import BlobStore
from hearthfile.bus.capability import CallContext, CapabilityDescriptor, Registry, TrustLevel
from hearthfile.cids import Cid
from hearthfile.config import DownloadsConfig
from hearthfile.errors import ServiceError
from hearthfile.services.control import control_descriptor
from hearthfile.services.downloads import core
from hearthfile.services.downloads.core import Record, Source, Status
from hearthfile.services.downloads.partial import ExpectMismatch, drop_partial, drop_strays
from hearthfile.services.downloads.peers import PeerCache
from hearthfile.services.downloads.records import RecordBook
from hearthfile.services.downloads.run import DownloadFailed, OriginRun, Progress
from hearthfile.services.node import send_pages

log = logging.getLogger(__name__)

Announce = Callable[[list[Cid], list[Cid]], None]

#: The longest ``node.download.wait`` holds a call before it answers anyway.
MAX_WAIT_S: Final = 30.0

#: Bytes httpcore asks the socket for per read (its own default: 64 KiB). A body read
#: 1 MiB at a time passes through trio's socket, h11 and httpx 16 times less often:
#: a 1 GiB download cost the daemon 1.1 CPU-s instead of 1.75. httpx has no setting
#: per client; the downloads client is the daemon's only HTTP client.
READ_BYTES: Final = 1024 * 1024


@dataclass(slots=True)
class _Active:
    """A download being fetched now."""

    scope: trio.CancelScope
    done: trio.Event = field(default_factory=trio.Event)
    run: OriginRun | None = None
    meter: core.SpeedMeter = field(default_factory=core.SpeedMeter)


class Downloads:
    def __init__(
        self,
        store: AsyncStore,
        book: RecordBook,
        config: DownloadsConfig,
        *,
        announce: Announce = lambda added, removed: None,
        peers: PeerCache | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``announce(added, removed)`` tells gossip what the node holds; ``peers``
        finds URLs other nodes cached (None: always the origin)."""
        self._store = store
        self._book = book
        self._config = config
        self._announce = announce
        self._peers = peers
        self._clock = clock
        self._records: dict[str, Record] = {}
        self._active: dict[str, _Active] = {}
        self._save_lock = trio.Lock()
        #: Set (and replaced) each time a record's change is written.
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._client: httpx.AsyncClient | None = None

    # -- running -------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load the records, take up interrupted downloads, run until cancelled."""
        now = self._clock()
        for rec in await trio.to_thread.run_sync(self._book.all):
            self._records[rec.id] = core.interrupted(rec, now)
        tokens = [r.partial_cid for r in self._records.values()]
        await self._store.run(drop_strays, self._store.sync, tokens)
        cfg = self._config
        timeout = httpx.Timeout(cfg.idle_timeout_s, connect=cfg.connect_timeout_s)
        httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = READ_BYTES
        async with (
            httpx.AsyncClient(
                follow_redirects=True,
                max_redirects=cfg.max_redirects,
                timeout=timeout,
                verify=True,
                trust_env=False,
            ) as client,
            trio.open_nursery() as nursery,
        ):
            self._client, self._nursery = client, nursery
            for id_ in list(self._records):
                await self._drop_leftover(id_)  # a crash came between Completed and this
            cached = [r for r in self._records.values() if r.status is Status.COMPLETED]
            self._announce([core.url_key(r.url) for r in cached], [])
            self._schedule()
            task_status.started()
            await trio.sleep_forever()

    def _schedule(self) -> None:
        assert self._nursery is not None
        for rec in core.to_start(list(self._records.values()), self._config.max_active):
            self._records[rec.id] = core.start(rec, self._clock())
            self._active[rec.id] = _Active(trio.CancelScope())
            self._nursery.start_soon(self._run_one, rec.id)

    async def _run_one(self, id_: str) -> None:
        active = self._active[id_]
        try:
            with active.scope:
                await self._save(id_)
                await self._fetch(id_, active)
        finally:
            del self._active[id_]
            active.done.set()
            if self._nursery is not None and not self._nursery.cancel_scope.cancel_called:
                self._schedule()

    async def _fetch(self, id_: str, active: _Active) -> None:
        assert self._client is not None
        rec = self._records[id_]
        manifest = await self._from_peers(rec)
        if manifest is not None:
            done = core.complete(rec, manifest.cid, manifest.size, Source.PEERS, self._clock())
            await self._finish(done)
            self._announce([manifest.cid, core.url_key(rec.url)], [])
            return
        progress = Progress(save=self._update, received=lambda n: self._received(active))
        run = active.run = OriginRun(rec, self._store, self._client, self._config, progress)
        log.info("download_start id=%s url=%s offset=%s", id_, rec.url, rec.downloaded_bytes)
        try:
            manifest = await run.run()
        except (DownloadFailed, ExpectMismatch, ServiceError) as exc:
            await self._finish(core.fail(self._records[id_], _message(exc), self._clock()))
            return
        except Exception as exc:  # one broad catch per run: a bug fails one download only
            log.exception("download_crashed id=%s", id_)
            await self._finish(
                core.fail(self._records[id_], f"internal error: {exc}", self._clock())
            )
            return
        done = core.complete(
            self._records[id_], manifest.cid, manifest.size, Source.ORIGIN, self._clock()
        )
        leftover = run.prefix_cid if run.prefix_cid != manifest.cid else None
        await self._finish(replace(done, mime=manifest.mime, partial_cid=leftover))
        self._announce([manifest.cid, core.url_key(rec.url)], [])
        await self._drop_leftover(id_)

    async def _drop_leftover(self, id_: str) -> None:
        """Remove the last prefix blob of a Completed download, then forget it."""
        rec = self._records.get(id_)
        if rec is None or rec.status is not Status.COMPLETED or rec.partial_cid is None:
            return
        await self._store.run(drop_partial, self._store.sync, rec.partial_cid)
        self._records[id_] = replace(self._records[id_], partial_cid=None)
        await self._save(id_)

    async def _from_peers(self, rec: Record) -> Manifest | None:
        """The URL fetched from members that cached it, pinned and named; None when
        none did (or ``refresh``), or their copy fails: then the origin is asked."""
        if self._peers is None or rec.refresh:
            return None
        try:
            cid = await self._peers.lookup(rec.url)
            if cid is None:
                return None
            log.info("download_from_peers id=%s cid=%s", rec.id, cid)
            manifest = await self._peers.fetch(cid)
            if not await self._store.run(_matches, self._store.sync, manifest, rec.expect):
                log.warning("download_peers_mismatch id=%s cid=%s", rec.id, cid)
                return None
            await self._store.run(_keep, self._store.sync, manifest, rec.name)
        except ServiceError as exc:
            log.info("download_peers_failed id=%s code=%s detail=%s", rec.id, exc.code, exc.detail)
            return None
        return manifest

    async def _finish(self, rec: Record) -> None:
        log.info("download_%s id=%s cid=%s error=%s", rec.status.value, rec.id, rec.cid, rec.error)
        self._records[rec.id] = rec
        await self._save(rec.id)

    def _received(self, active: _Active) -> None:
        if active.run is not None:
            active.meter.add(trio.current_time(), active.run.offset)

    async def _update(self, from_run: Record) -> None:
        """A run's view of its record: take the fields a run owns, keep the status."""
        current = self._records.get(from_run.id)
        if current is None:
            return
        self._records[from_run.id] = replace(
            current,
            size=from_run.size,
            validator=from_run.validator,
            mime=from_run.mime,
            partial_cid=from_run.partial_cid,
            downloaded_bytes=from_run.downloaded_bytes,
            updated_at=self._clock(),
        )
        await self._save(from_run.id)

    async def _save(self, id_: str) -> None:
        """Write the record's latest state (or its absence); saves never reorder."""
        async with self._save_lock:
            rec = self._records.get(id_)
            try:
                if rec is None:
                    await trio.to_thread.run_sync(self._book.delete, id_)
                else:
                    await trio.to_thread.run_sync(self._book.save, rec)
            except sqlite3.Error as exc:
                # A full disk must not stop the node: the record lives on in memory
                # and the next change of it is written again.
                log.error("download_record_not_saved id=%s error=%s", id_, exc)
            self._changed.set()
            self._changed = trio.Event()

    # -- what callers ask ----------------------------------------------------------------

    async def add(
        self, url: object, name: object = None, expect: object = None, refresh: bool = False
    ) -> tuple[dict[str, Any], bool]:
        """Start caching ``url``, or find the download that already does.
        Returns the record and whether it is new."""
        url = core.check_url(url)
        clean_name, clean_expect = core.check_name(name), core.check_expect(expect)
        for rec in self._records.values():
            if rec.url == url:
                if refresh and rec.status in (Status.COMPLETED, Status.FAILED):
                    await self._set(core.resume(rec, self._clock(), refresh=True))
                return self.show(rec.id), False
        rec = core.new_record(
            secrets.token_hex(8), url, clean_name, clean_expect, refresh, self._clock()
        )
        await self._set(rec)
        return self.show(rec.id), True

    def find(self, url: str | None = None) -> list[dict[str, Any]]:
        return [self._view(r) for r in self._records.values() if url is None or r.url == url]

    def page(
        self, url: str | None, after: str, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Up to ``limit`` records in id order after id ``after`` (of ``url`` only, when
        given), and the ``after`` of the next page: None on the last."""
        rest = sorted(
            (r for r in self._records.values() if r.id > after and url in (None, r.url)),
            key=lambda r: r.id,
        )
        page = rest[:limit]
        return [self._view(r) for r in page], page[-1].id if len(rest) > limit else None

    def show(self, id_: str) -> dict[str, Any]:
        return self._view(self._get(id_))

    def record(self, id_: str) -> Record:
        return self._get(id_)

    async def wait(self, id_: str, timeout_s: float) -> dict[str, Any]:
        """The record once it is neither Pending nor InProgress (as written), or as it
        stands after ``timeout_s``; ``not_found`` once it is removed."""
        with trio.move_on_after(timeout_s):
            while self._get(id_).status in (Status.PENDING, Status.IN_PROGRESS):
                await self._changed.wait()
        return self.show(id_)

    async def pause(self, id_: str) -> dict[str, Any]:
        await self._set(core.pause(self._get(id_), self._clock()))
        active = self._active.get(id_)
        if active is not None:
            active.scope.cancel()
            await active.done.wait()
        return self.show(id_)

    async def resume(self, id_: str) -> dict[str, Any]:
        await self._set(core.resume(self._get(id_), self._clock()))
        return self.show(id_)

    async def remove(self, id_: str) -> None:
        """Forget a download; a finished blob stays in the store (it is the user's)."""
        self._get(id_)
        active = self._active.get(id_)
        if active is not None:
            active.scope.cancel()
            await active.done.wait()
        rec = self._records.pop(id_)
        if rec.status is Status.COMPLETED:
            self._announce([], [core.url_key(rec.url)])
        if rec.partial_cid is not None and rec.partial_cid != rec.cid:
            await self._store.run(drop_partial, self._store.sync, rec.partial_cid)
        await self._save(id_)

    async def _set(self, rec: Record) -> None:
        self._records[rec.id] = rec
        await self._save(rec.id)
        if self._nursery is not None:
            self._schedule()

    def _get(self, id_: str) -> Record:
        rec = self._records.get(id_)
        if rec is None:
            raise ServiceError("not_found", f"no download {id_}")
        return rec

    def _view(self, rec: Record) -> dict[str, Any]:
        active = self._active.get(rec.id)
        if active is None or active.run is None or rec.status is not Status.IN_PROGRESS:
            return rec.as_json()
        live = replace(rec, downloaded_bytes=active.run.offset)
        return live.as_json(active.meter.rate())

    # -- node.* capabilities (the CLI) ---------------------------------------------------

    def register(self, registry: Registry) -> None:
        for name, handler in [
            ("node.download", self._cap_add),
            ("node.downloads", self._cap_list),
            ("node.download.show", self._cap_show),
            ("node.download.wait", self._cap_wait),
            ("node.download.pause", self._cap_pause),
            ("node.download.resume", self._cap_resume),
            ("node.download.remove", self._cap_remove),
        ]:
            registry.register(control_descriptor(name, 60), handler)
        registry.register(
            CapabilityDescriptor(
                name="download.resolve",
                version=(1, 0),
                trust_required=TrustLevel.MEMBER,
                max_concurrent=16,
                timeout_seconds=10,
                idempotent=True,
                stability="experimental",
            ),
            self._cap_resolve,
        )

    async def _cap_resolve(self, ctx: CallContext) -> dict[str, Any]:
        """``download.resolve {url}``: a member asks which blob we cached ``url`` as."""
        url = _args(ctx).get("url")
        for rec in self._records.values():
            done = rec.url == url and rec.status is Status.COMPLETED and rec.cid is not None
            if done and await self._store.has_blob(Cid(str(rec.cid))):
                return {"cid": rec.cid, "size": rec.size, "name": rec.name}
        raise ServiceError("not_found", "no completed download of that URL here")

    async def _cap_add(self, ctx: CallContext) -> dict[str, Any]:
        a = _args(ctx)
        with _bad_request():
            rec, _ = await self.add(
                a.get("url"), a.get("name"), a.get("expect"), bool(a.get("refresh"))
            )
        return rec

    async def _cap_list(self, ctx: CallContext) -> dict[str, Any]:
        """Records stream as pages of ``{"items": [...]}`` (many records outgrow a frame)."""
        url = _args(ctx).get("url")
        rows = self.find(url if isinstance(url, str) else None)
        await send_pages(ctx, "items", [*rows])
        return {"count": len(rows)}

    async def _cap_show(self, ctx: CallContext) -> dict[str, Any]:
        return self.show(_id(ctx))

    async def _cap_wait(self, ctx: CallContext) -> dict[str, Any]:
        timeout = _args(ctx).get("timeout_s", 1.0)
        if not isinstance(timeout, int | float) or not 0 <= timeout <= MAX_WAIT_S:
            raise ServiceError("bad_request", f"timeout_s must be 0 to {MAX_WAIT_S:g} seconds")
        return await self.wait(_id(ctx), float(timeout))

    async def _cap_pause(self, ctx: CallContext) -> dict[str, Any]:
        with _bad_request():
            return await self.pause(_id(ctx))

    async def _cap_resume(self, ctx: CallContext) -> dict[str, Any]:
        with _bad_request():
            return await self.resume(_id(ctx))

    async def _cap_remove(self, ctx: CallContext) -> dict[str, Any]:
        id_ = _id(ctx)
        await self.remove(id_)
        return {"id": id_, "removed": True}


def _matches(store: BlobStore, manifest: Manifest, expect: str | None) -> bool:
    """Whether a blob has the whole-file hash a download expects (blocking)."""
    if expect is None:
        return True
    kind, _, want = expect.partition(":")
    if kind == "blake3":
        return manifest.content == f"blake3:{want}"
    digest = hashlib.sha256()
    for view in store.read_blob_stream(manifest.cid, 0, None):
        digest.update(view)
    return digest.hexdigest() == want


def _keep(store: BlobStore, manifest: Manifest, name: str) -> None:
    """Pin a blob fetched for a download and give it the download's name (blocking)."""
    store.keep(manifest.cid, name=name)


def _message(exc: BaseException) -> str:
    if isinstance(exc, ServiceError):
        return f"{exc.code.replace('_', ' ')}: {exc.detail}" if exc.detail else exc.code
    return str(exc)


def _args(ctx: CallContext) -> dict[str, Any]:
    if not isinstance(ctx.args, dict):
        raise ServiceError("bad_request", "expected a map of arguments")
    return ctx.args


def _id(ctx: CallContext) -> str:
    id_ = _args(ctx).get("id")
    if not isinstance(id_, str) or not 0 < len(id_) <= 64:
        raise ServiceError("bad_request", "expected a download id")
    return id_


@contextlib.contextmanager
def _bad_request() -> Iterator[None]:
    """Caller mistakes (``core.DownloadError``) become ``bad_request``."""
    try:
        yield
    except core.DownloadError as exc:
        raise ServiceError("bad_request", str(exc)) from None


__all__ = ["Downloads"]
