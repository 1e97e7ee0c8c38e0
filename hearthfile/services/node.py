"""NodeService: the node.* capabilities the local CLI drives its daemon with (trio shell).

Only the node's own key reaches trust ``self``, so every capability here
requires it: a peer, however trusted, cannot list, remove or push our blobs.
Store work runs in worker threads through ``services.ops``, the same code the
CLI runs when no daemon is up. Network work (fetch, push, peers) is
handed in as objects by the daemon, which owns the pool and the sources.
Handlers return the typed results of ``services.results``; ``send_result``
encodes them once, at the seam.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, BinaryIO, Final, Protocol, TypeVar, cast

import msgpack
import trio

from hearthfile.blobs.chunker import BlobError, Manifest
from hearthfile.blobs.facade import service_error
from hearthfile.blobs.store import BlobStore, PinnedError
from hearthfile.bus.capability import (
    CallContext,
    Handler,
    Registry,
)
from hearthfile.cids import Cid
from hearthfile.errors import ServiceError
from hearthfile.events import BlobEvicted, EventBus
from hearthfile.services import ops
from hearthfile.services.control import control_descriptor
from hearthfile.services.repair import repair, verify_for_repair
from hearthfile.services.results import (
    Added,
    AddProgress,
    Cancelled,
    Fetched,
    GcResult,
    Holder,
    NodeStatus,
    PeerRow,
    PinState,
    Pushed,
    Removed,
    TransferState,
    VerifyResult,
    to_wire,
)
from hearthfile.services.streams import ChannelReader
from hearthfile.services.threads import Stop, run_stoppable
from hearthfile.transfer.fileproto import bad, want_cid, want_int, want_map
from hearthfile.transfer.peer import Progress, ProgressFn
from hearthfile.transfer.push import PushResult

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

MAX_ADD_PATHS: Final = 100_000
#: List results (peers, the blobs a gc removed, what verify found) reach the CLI as stream
#: items of about this many bytes each: the whole list for a large store would not fit
#: in one frame. The call's result carries the rest.
PAGE_BYTES: Final = 64 * 1024
#: Progress streamed to the CLI at most this often (and once at the end).
PROGRESS_INTERVAL_S: Final = 0.1
T = TypeVar("T")
#: ``report(state, final)``: a progress state for the caller; the final one is always sent.
Report = Callable[["DataclassInstance", bool], None]
#: Blocks of a streamed add queued between the caller and the adding thread.
STREAM_QUEUE: Final = 2


async def send_pages(ctx: CallContext, key: str, values: list[object]) -> None:
    """Stream ``values`` as ``{key: [...]}`` items of about ``PAGE_BYTES`` each (sized by
    packing them: exact, and faster than estimating in Python)."""
    for page in ops.pages(values, PAGE_BYTES, lambda v: len(msgpack.packb(v))):
        await ctx.send({key: page})


async def send_result(ctx: CallContext, result: object) -> dict[str, object]:
    """Encode a handler's result once: a list result goes as ``{"items": [...]}`` pages
    and answers ``{"count": n}``; each list field of a result goes as ``{field: [...]}``
    pages and the rest is the answer."""
    if isinstance(result, list):
        await send_pages(ctx, "items", [to_wire(r) for r in result])
        return {"count": len(result)}
    wire = to_wire(result)
    for key in [k for k, v in wire.items() if isinstance(v, list)]:
        values = wire.pop(key)
        await (send_pages(ctx, key, values) if values else ctx.send({key: []}))
    return wire


def answering(handler: Callable[[CallContext], Awaitable[object]]) -> Handler:
    async def answer(ctx: CallContext) -> dict[str, object]:
        return await send_result(ctx, await handler(ctx))

    return answer


class NodeTransfers(Protocol):
    """Fetches and pushes (``transfer.manager.TransferManager``)."""

    async def fetch(
        self, cid: Cid, span: tuple[int, int] | None, sequential: bool, progress: ProgressFn
    ) -> Manifest: ...
    async def push(self, cid: Cid, target: str, progress: ProgressFn) -> PushResult: ...
    def snapshot(self) -> list[Progress]: ...
    def cancel(self, cid: Cid) -> bool: ...


class Directory(Protocol):
    """What the node knows of itself and its peers (``services.directory.NodeDirectory``)."""

    def status(self) -> NodeStatus: ...
    def peers(self) -> list[PeerRow]: ...
    def whohas(self, cid: Cid) -> list[Holder]: ...


class NodeService:
    def __init__(
        self,
        store: BlobStore,
        *,
        transfers: NodeTransfers,
        directory: Directory,
        events: EventBus,
        announce: Callable[[list[Cid], list[Cid]], None] = lambda added, removed: None,
    ) -> None:
        """``announce(added, removed)`` is told every change of what the node holds."""
        self._store = store
        self._transfers = transfers
        self._fetch = transfers.fetch
        self._push = transfers.push
        self._status = directory.status
        self._peers = directory.peers
        self._whohas = directory.whohas
        self._events = events
        self._announce = announce

    def register(self, registry: Registry) -> None:
        day = 24 * 3600.0
        handlers: list[tuple[str, Callable[[CallContext], Awaitable[object]], float]] = [
            ("node.status", self.status, 10),
            ("node.peers", self.peers, 10),
            ("node.add", self.add, day),
            ("node.add_stream", self.add_stream, day),
            ("node.fetch", self.fetch, day),
            ("node.pin", self.pin, 10),
            ("node.unpin", self.unpin, 10),
            ("node.rm", self.rm, 60),
            ("node.gc", self.gc, 3600),
            ("node.verify", self.verify, day),
            ("node.push", self.push, day),
            ("node.transfers", self.transfers, 10),
            ("node.whohas", self.whohas, 10),
            ("node.cancel", self.cancel, 10),
        ]
        for name, handler, timeout in handlers:
            # Many CIDs are fetched at once by one get.
            limit = 64 if name == "node.fetch" else 16
            registry.register(control_descriptor(name, timeout, limit), answering(handler))
        registry.register(control_descriptor("node.events", 365 * day), self.events)

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self._mapped(trio.to_thread.run_sync(lambda: fn(*args, **kwargs)))

    async def _mapped(self, work: Awaitable[T]) -> T:
        """``work``'s result, with store and path errors as wire errors."""
        try:
            return await work
        except (BlobError, PinnedError) as exc:
            raise service_error(exc) from None
        except ops.PathError as exc:
            raise ServiceError("bad_request", str(exc)) from None

    async def status(self, ctx: CallContext) -> NodeStatus:
        return self._status()

    async def peers(self, ctx: CallContext) -> list[PeerRow]:
        return self._peers()

    async def add(self, ctx: CallContext) -> Added:
        args = want_map(ctx.args)
        paths = args.get("paths")
        if not isinstance(paths, list) or not paths or len(paths) > MAX_ADD_PATHS:
            raise bad(f"paths must be a list of 1..{MAX_ADD_PATHS} file paths")
        if not all(isinstance(p, str) and p.startswith("/") for p in paths):
            raise bad("paths must be absolute")
        pin = bool(args.get("pin"))

        def add(report: Report) -> Awaitable[list[Cid]]:
            def progress(state: AddProgress) -> None:  # in the adding thread
                trio.from_thread.run_sync(report, state, state.done_bytes >= state.total_bytes)

            def work(stop: Stop) -> list[Cid]:
                return ops.add_paths(
                    self._store, paths, pin=pin, progress_for=stop.per_file, progress=progress
                )

            # Adding stops when the client goes away (Ctrl-C, a closed connection, SIGTERM).
            return self._mapped(run_stoppable(work))

        cids = await _with_progress(ctx, add)
        self._announce(cids, [])
        return Added(cids)

    async def add_stream(self, ctx: CallContext) -> Added:
        """The caller streams ``{"data": bytes}`` items, then ends: one blob of them.
        The daemon never reads a stream of its own (its stdin is not the caller's)."""
        args = want_map(ctx.args)
        name = args.get("name")
        if name is not None and not isinstance(name, str):
            raise bad("name must be text")
        send, receive = trio.open_memory_channel[bytes](STREAM_QUEUE)
        reader = ChannelReader(receive)
        stream = cast(BinaryIO, reader)
        done: list[Cid] = []
        failure: list[Exception] = []

        async def store() -> None:
            pin = bool(args.get("pin"))
            with receive:
                try:
                    cid = await self._run(ops.add_stream, self._store, stream, name=name, pin=pin)
                except Exception as exc:  # handed to the caller below, unwrapped
                    failure.append(exc)
                    return
                done.append(cid)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(store)
            async with send:
                try:
                    await _feed(ctx, send)
                except ServiceError as exc:  # a bad item: nothing of the stream is kept
                    reader.aborted = True
                    failure.append(exc)
                except BaseException:
                    reader.aborted = True
                    raise
        if failure:
            raise failure[0]
        self._announce(done, [])
        return Added(done)

    async def fetch(self, ctx: CallContext) -> Fetched:
        args = want_map(ctx.args)
        cid = want_cid(args.get("cid"))
        span = args.get("range")
        if span is not None:
            if not isinstance(span, list) or len(span) != 2:
                raise bad("range is [start, end)")
            span = (want_int(span[0], "range start"), want_int(span[1], "range end", span[0]))
        sequential = args.get("stream") is True
        output = args.get("output")
        if output is not None and (span is not None or not _absolute_path(output)):
            raise bad("output is an absolute path, for a whole blob")
        with contextlib.ExitStack() as stack:
            mirror = None
            if output is not None:  # chunks go to the caller's file as they are stored
                try:
                    opened = await self._run(self._store.mirror, cid, output)
                except ServiceError:
                    raise bad(f"cannot write {output}") from None
                mirror = stack.enter_context(opened)
            manifest: Manifest = await _with_progress(
                ctx, lambda report: self._fetch(cid, span, sequential, _transfer_progress(report))
            )
            if mirror is not None:
                with self._store.using(cid):
                    await self._run(mirror.finish, manifest)
                log.info("fetch wrote cid=%s to %s", cid, output)
        return Fetched(cid, manifest.size, manifest.name, written=output is not None)

    async def pin(self, ctx: CallContext) -> PinState:
        return await self._run(ops.pin, self._store, _cid_arg(ctx))

    async def unpin(self, ctx: CallContext) -> PinState:
        return await self._run(ops.unpin, self._store, _cid_arg(ctx))

    async def rm(self, ctx: CallContext) -> Removed:
        result = await self._run(ops.rm, self._store, _cid_arg(ctx))
        self._announce([], [result.cid])
        return result

    async def gc(self, ctx: CallContext) -> GcResult:
        everything = bool(want_map(ctx.args).get("all"))
        result = await self._run(ops.gc, self._store, everything)
        for cid in result.removed:
            self._events.publish(BlobEvicted(cid))
        self._announce([], result.removed)
        return result

    async def whohas(self, ctx: CallContext) -> list[Holder]:
        return self._whohas(_cid_arg(ctx))

    async def events(self, ctx: CallContext) -> dict[str, Any]:
        """Past events after ``after``; with ``follow``, then new ones until cancelled."""
        args = want_map(ctx.args)
        after = want_int(args.get("after", 0), "after")
        if not args.get("follow"):
            for entry in self._events.recorded(after):
                await ctx.send(entry.to_wire())
            return {}
        async for entry in self._events.follow(after):
            await ctx.send(entry.to_wire())
        return {}

    async def verify(self, ctx: CallContext) -> VerifyResult:
        """With ``{"repair": true}``, the damaged blobs are then fetched again from peers."""
        if not want_map(ctx.args).get("repair"):
            return await self._run(ops.verify, self._store)
        result, targets = await self._run(verify_for_repair, self._store)
        return await repair(result, targets, self._refetch)

    async def _refetch(self, cid: Cid) -> Manifest:
        return await self._fetch(cid, None, False, _no_progress)

    async def push(self, ctx: CallContext) -> Pushed:
        args = want_map(ctx.args)
        cid = want_cid(args.get("cid"))
        target = args.get("to")
        if not isinstance(target, str):
            raise bad("to must be a NodeID")
        result: PushResult = await _with_progress(
            ctx, lambda report: self._push(cid, target, _transfer_progress(report))
        )
        return Pushed(cid, result.sent, result.skipped)

    async def transfers(self, ctx: CallContext) -> list[TransferState]:
        return [TransferState(**asdict(p)) for p in self._transfers.snapshot()]

    async def cancel(self, ctx: CallContext) -> Cancelled:
        cid = _cid_arg(ctx)
        if not self._transfers.cancel(cid):
            raise ServiceError("not_found", f"no fetch of {cid} is running")
        return Cancelled(cid, cancelled=True)


async def _feed(ctx: CallContext, send: trio.MemorySendChannel[bytes]) -> None:
    """The caller's ``{"data": bytes}`` items into ``send``, until the caller's end."""
    async for item in ctx.incoming():
        data = item.get("data") if isinstance(item, dict) else None
        if not isinstance(data, bytes):
            raise bad("add_stream items are {data: bytes}")
        try:
            await send.send(data)
        except trio.BrokenResourceError:
            return  # the store stopped reading: its failure is the answer


def _no_progress(progress: Progress) -> None:
    pass


def _cid_arg(ctx: CallContext) -> Cid:
    return want_cid(want_map(ctx.args).get("cid"))


def _transfer_progress(report: Report) -> ProgressFn:
    def progress(p: Progress) -> None:
        report(TransferState(**asdict(p)), p.chunks_done >= p.chunks_total)

    return progress


def _absolute_path(value: object) -> bool:
    return isinstance(value, str) and value.startswith("/") and 0 < len(value) <= 4096


async def _with_progress(ctx: CallContext, job: Callable[[Report], Awaitable[T]]) -> T:
    """Run ``job``, streaming the progress it reports to the caller, at most every
    ``PROGRESS_INTERVAL_S`` and always the final state; the latest state wins when
    the caller lags. The job's own exception is re-raised as is (not as a group)."""
    send, receive = trio.open_memory_channel[dict[str, object]](1)
    outcome: list[T] = []
    failure: list[Exception] = []
    last_sent = [-math.inf]

    def report(state: DataclassInstance, final: bool) -> None:
        now = trio.current_time()
        if now - last_sent[0] < PROGRESS_INTERVAL_S and not final:
            return
        last_sent[0] = now
        # The caller may be gone already (a stopped add reports from its thread).
        gone = (trio.BrokenResourceError, trio.ClosedResourceError)
        with contextlib.suppress(trio.WouldBlock, *gone):
            send.send_nowait(to_wire(state))

    async def run() -> None:
        async with send:
            try:
                outcome.append(await job(report))
            except Exception as exc:  # handed to the caller below, unwrapped
                failure.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        async for state in receive:
            await ctx.send(state)
    if failure:
        raise failure[0]
    return outcome[0]
