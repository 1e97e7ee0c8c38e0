"""A typed client of the node: what every command calls, daemon or not.

``NodeClient`` is one protocol with two implementations. ``BusClient`` talks to
the home's daemon over the bus (``node.*``, signed with the node's own key, so at
trust ``self``), connecting on its first call; blob bytes it reads from the daemon's
store directly (read-only), which spares them a trip through the encrypted channel,
and a blob held already needs no call at all. ``LocalClient`` works on
the store itself when no daemon runs; network operations say that none runs.
Both answer with the result types of ``services.results``. (``ls`` and ``stat``
read the index directly: ``cli.local``.)
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final, Protocol, TypeVar

import trio

from hearthfile import home as node_home
from hearthfile.blobs.chunker import BlobError, Manifest
from hearthfile.blobs.files import Buffer
from hearthfile.cids import Cid
from hearthfile.cli.errors import CliError
from hearthfile.cli.local import load_key, no_node, open_store
from hearthfile.errors import PeerUnavailable, RemoteProtocolError
from hearthfile.identity import NodeId
from hearthfile.services import ops
from hearthfile.services.results import (
    Added,
    AddProgress,
    Cancelled,
    DownloadRecord,
    DownloadRemoved,
    Fetched,
    GcResult,
    Holder,
    Invitation,
    Joined,
    NodeStatus,
    PeerRow,
    PinState,
    Pushed,
    Removed,
    TransferState,
    TrustChanged,
    TrustRow,
    VerifyResult,
    from_wire,
)
from hearthfile.trust.book import TrustError

if TYPE_CHECKING:  # the bus loads only when a daemon runs, the store when read
    from hearthfile.blobs.store import BlobStore
    from hearthfile.bus.capability import TrustLevel
    from hearthfile.bus.connection import Connection, OutgoingCall
    from hearthfile.trust.book import TrustBook

#: Bytes of paths per ``node.add`` call: a request must fit in one frame.
ADD_BATCH_BYTES: Final = 128 * 1024
#: Bytes per item of a streamed add: a chunk's worth, well inside one frame.
STREAM_BLOCK_BYTES: Final = 256 * 1024

Span = tuple[int, int] | None  # [start, end) in bytes
Write = Callable[[Buffer], object]
OnProgress = Callable[[TransferState], None]
OnEvent = Callable[[dict[str, Any]], None]
OnAdd = Callable[[AddProgress], None]
#: ``{url, name, expect, refresh}`` of ``hearthfile download``.
DownloadRequest = dict[str, str | bool | None]
R = TypeVar("R")


def _ignore(state: TransferState) -> None:
    pass


def _quiet(state: AddProgress) -> None:
    pass


class NodeClient(Protocol):
    home: Path

    async def add(self, paths: list[str], *, pin: bool, progress: OnAdd = _quiet) -> Added:
        """Add regular files the node reads by their (absolute) paths."""
        ...

    async def add_stream(self, stream: BinaryIO, name: str | None, *, pin: bool) -> Added:
        """Add what the CLI reads from ``stream`` (stdin, a pipe, a device) as one blob."""
        ...

    async def fetch(
        self, cid: Cid, span: Span, progress: OnProgress = _ignore, output: str | None = None
    ) -> Fetched:
        """Make the blob (or span) complete here; with ``output`` (an absolute path
        to an existing file) the node may also write the whole blob there as it
        lands: ``Fetched.written`` says whether it did."""
        ...

    async def read(self, cid: Cid, span: Span, write: Write) -> None:
        """Write the blob's bytes (or the span) in order, fetching what is missing."""
        ...

    async def export(self, cid: Cid, write: Write) -> None:
        """Write a held blob whole, checked as a whole once written: for a file kept
        only if this returns (``BlobStore.export``)."""
        ...

    async def pin(self, cid: Cid) -> PinState: ...
    async def unpin(self, cid: Cid) -> PinState: ...
    async def rm(self, cid: Cid) -> Removed: ...
    async def gc(self, everything: bool) -> GcResult: ...
    async def verify(self, repair: bool) -> VerifyResult:
        """Re-hash the store; with ``repair``, fetch the damaged blobs again (the node only)."""
        ...

    async def status(self) -> NodeStatus: ...
    async def peers(self) -> list[PeerRow]: ...
    async def push(self, cid: Cid, to: NodeId, progress: OnProgress = _ignore) -> Pushed: ...
    async def trust(self, node: NodeId, level: str) -> TrustChanged: ...
    async def untrust(self, node: NodeId) -> TrustChanged: ...
    async def trusted(self) -> list[TrustRow]: ...
    async def invite(self, level: str, uses: int, ttl_s: float) -> Invitation: ...
    async def join(self, token: str) -> Joined: ...
    async def download(self, request: DownloadRequest) -> DownloadRecord: ...
    async def downloads(self) -> list[DownloadRecord]: ...
    async def download_op(self, action: str, id_: str) -> DownloadRecord:
        """``show``, ``pause`` or ``resume`` one download."""
        ...

    async def download_wait(self, id_: str, timeout_s: float) -> DownloadRecord:
        """The record once the download ends, or as it stands after ``timeout_s``."""
        ...

    async def download_remove(self, id_: str) -> DownloadRemoved: ...
    async def transfers(self) -> list[TransferState]: ...
    async def cancel(self, cid: Cid) -> Cancelled: ...
    async def whohas(self, cid: Cid) -> list[Holder]: ...
    async def events(self, follow: bool, on_event: OnEvent) -> None: ...


def _write_span(store: BlobStore, cid: Cid, span: Span, write: Write) -> None:
    start, end = (0, None) if span is None else span
    for view in store.read_blob_stream(cid, start, end):
        write(view)


class LocalClient:
    """The store itself, when no daemon runs (opened on first use)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._store: BlobStore | None = None

    @property
    def store(self) -> BlobStore:
        if self._store is None:
            self._store = open_store(self.home)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    def _no_daemon(self) -> CliError:
        if not self.home.is_dir():
            return no_node(self.home)
        return CliError(f"no daemon running for {self.home}")

    async def add(self, paths: list[str], *, pin: bool, progress: OnAdd = _quiet) -> Added:
        return Added(ops.add_paths(self.store, paths, pin=pin, progress=progress))

    async def add_stream(self, stream: BinaryIO, name: str | None, *, pin: bool) -> Added:
        return Added([ops.add_stream(self.store, stream, name=name, pin=pin)])

    async def fetch(
        self, cid: Cid, span: Span, progress: OnProgress = _ignore, output: str | None = None
    ) -> Fetched:
        try:  # all of it (or of the span) must be here: there is no daemon to fetch it
            next(iter(self.store.read_blob_stream(cid, *(span or (0, None)))), None)
        except BlobError:
            raise BlobError("not_found", cid) from None
        info = self.store.stat(cid)
        return Fetched(cid, info.size, info.name)

    async def read(self, cid: Cid, span: Span, write: Write) -> None:
        _write_span(self.store, cid, span, write)

    async def export(self, cid: Cid, write: Write) -> None:
        for view in self.store.export(cid):
            write(view)

    async def pin(self, cid: Cid) -> PinState:
        return ops.pin(self.store, cid)

    async def unpin(self, cid: Cid) -> PinState:
        return ops.unpin(self.store, cid)

    async def rm(self, cid: Cid) -> Removed:
        return ops.rm(self.store, cid)

    async def gc(self, everything: bool) -> GcResult:
        return ops.gc(self.store, everything)

    async def verify(self, repair: bool) -> VerifyResult:
        if repair:  # before any work: the fetches need the node's peers
            raise CliError(
                f"verify --repair needs the running node (no daemon runs for {self.home}): "
                "start it with 'hearthfile run'"
            )
        return ops.verify(self.store)

    async def status(self) -> NodeStatus:
        raise self._no_daemon()

    async def peers(self) -> list[PeerRow]:
        raise self._no_daemon()

    async def push(self, cid: Cid, to: NodeId, progress: OnProgress = _ignore) -> Pushed:
        raise self._no_daemon()

    def _book(self) -> TrustBook:
        """The home's trust book; the daemon reads it when it starts."""
        from hearthfile.config import load_config
        from hearthfile.trust.storage import open_book

        if not self.home.is_dir():
            raise no_node(self.home)
        config = load_config(self.home)
        try:
            return open_book(
                self.home,
                load_key(self.home).node_id,
                config.trust,
                open_membership=config.open_membership,
            )
        except TrustError as exc:
            raise CliError(str(exc)) from None

    async def trust(self, node: NodeId, level: str) -> TrustChanged:
        from hearthfile.trust.levels import TrustLevel

        try:
            change = self._book().grant(node, TrustLevel.parse_grantable(level), now=time.time())
        except TrustError as exc:
            raise CliError(str(exc)) from None
        return TrustChanged(str(node), change.after.label)

    async def untrust(self, node: NodeId) -> TrustChanged:
        try:
            change = self._book().revoke(node)
        except TrustError as exc:
            raise CliError(str(exc)) from None
        return TrustChanged(str(node), change.after.label)

    async def trusted(self) -> list[TrustRow]:
        from hearthfile.services.trust import entry_row

        return [from_wire(TrustRow, entry_row(e)) for e in self._book().entries()]

    async def invite(self, level: str, uses: int, ttl_s: float) -> Invitation:
        raise self._needs_daemon()

    async def join(self, token: str) -> Joined:
        raise self._needs_daemon()

    async def download(self, request: DownloadRequest) -> DownloadRecord:
        raise self._needs_daemon()

    async def downloads(self) -> list[DownloadRecord]:
        raise self._needs_daemon()

    async def download_op(self, action: str, id_: str) -> DownloadRecord:
        raise self._needs_daemon()

    async def download_wait(self, id_: str, timeout_s: float) -> DownloadRecord:
        raise self._needs_daemon()

    async def download_remove(self, id_: str) -> DownloadRemoved:
        raise self._needs_daemon()

    def _needs_daemon(self) -> CliError:
        return CliError(f"no daemon running for {self.home}: start it with 'hearthfile run'")

    async def transfers(self) -> list[TransferState]:
        raise self._no_daemon()

    async def cancel(self, cid: Cid) -> Cancelled:
        raise self._no_daemon()

    async def whohas(self, cid: Cid) -> list[Holder]:
        raise self._no_daemon()

    async def events(self, follow: bool, on_event: OnEvent) -> None:
        raise self._no_daemon()


def _is_page(item: object) -> bool:
    """A page of a list result: ``{key: [...]}`` (progress maps have several keys)."""
    return isinstance(item, dict) and len(item) == 1 and isinstance(next(iter(item.values())), list)


def _path_bytes(path: str) -> int:
    return len(path.encode(errors="surrogateescape")) + 5


class DaemonLink:
    """The bus connection to the home's daemon, opened on first use: a command that
    only reads what the store holds (``cat`` of a held blob) needs no handshake.

    The connection lives in a task of the command's nursery (its channel is opened
    and closed by that one task), whichever of the command's tasks asked first."""

    def __init__(self, home: Path, info: node_home.DaemonInfo, nursery: trio.Nursery) -> None:
        self._home, self._info, self._nursery = home, info, nursery
        self._conn: Connection | None = None
        self._opening = trio.Lock()

    async def connection(self) -> Connection:
        async with self._opening:
            if self._conn is None:
                try:
                    self._conn = await self._nursery.start(self._serve)
                except PeerUnavailable as exc:
                    address = self._info.address
                    raise CliError(
                        f"cannot reach the daemon for {self._home} at {address}: {exc}"
                    ) from None
        assert self._conn is not None
        return self._conn

    async def _serve(self, task_status: trio.TaskStatus[Connection]) -> None:
        from hearthfile.bus.capability import Registry
        from hearthfile.bus.client import open_secure_channel
        from hearthfile.bus.connection import Connection

        key = load_key(self._home)
        via = node_home.control_socket(self._home)  # our own way in, whatever strangers do
        via = via if via is not None and via.exists() else None
        address = self._info.address
        async with open_secure_channel(address, key, expected_peer=key.node_id, via=via) as ch:
            conn = Connection(ch, Registry(), _self_only(key.node_id), initiator=True)
            async with trio.open_nursery() as nursery:
                await nursery.start(conn.serve)
                task_status.started(conn)
                await trio.sleep_forever()  # until the command ends


class BusClient:
    """The home's daemon, over the bus."""

    def __init__(self, home: Path, link: DaemonLink, data_dir: Path) -> None:
        self.home = home
        self.link = link
        self.data_dir = data_dir

    async def _answer(
        self,
        op: str,
        args: dict[str, Any],
        progress: Callable[[object], None] | None = None,
        feed: Callable[[OutgoingCall], Awaitable[None]] | None = None,
    ) -> dict[str, Any]:
        """Call ``node.<op>`` (first streaming ``feed``'s items to it): its answer with
        the paged lists put back in place; other items go to ``progress``."""
        lists: dict[str, list[Any]] = {}
        conn = await self.link.connection()
        async with conn.open_call(f"node.{op}", args) as call:
            if feed is not None:
                await feed(call)
            async for item in call:
                if _is_page(item):
                    [(key, values)] = item.items()
                    lists.setdefault(key, []).extend(values)
                elif progress is not None:
                    progress(item)
            answer = await call.result()
        if isinstance(answer, list):  # a short list answered whole
            answer = {"items": answer}
        if not isinstance(answer, dict):
            raise RemoteProtocolError(f"node.{op} answered {type(answer).__name__}")
        return {**answer, **lists}

    async def _one(
        self, kind: type[R], op: str, args: dict[str, Any], progress: OnProgress | None = None
    ) -> R:
        def on_item(item: object) -> None:
            if progress is not None:
                progress(from_wire(TransferState, item))

        return from_wire(kind, await self._answer(op, args, on_item))

    async def _many(self, kind: type[R], op: str, args: dict[str, Any]) -> list[R]:
        return [from_wire(kind, item) for item in (await self._answer(op, args)).get("items", [])]

    async def add(self, paths: list[str], *, pin: bool, progress: OnAdd = _quiet) -> Added:
        cids: list[Cid] = []

        def on_item(item: object) -> None:
            progress(from_wire(AddProgress, item))

        for batch in ops.pages(paths, ADD_BATCH_BYTES, _path_bytes):
            answer = await self._answer("add", {"paths": batch, "pin": pin}, on_item)
            cids.extend(from_wire(Added, answer).cids)
        return Added(cids)

    async def add_stream(self, stream: BinaryIO, name: str | None, *, pin: bool) -> Added:
        async def feed(call: OutgoingCall) -> None:
            while block := await trio.to_thread.run_sync(
                stream.read, STREAM_BLOCK_BYTES, abandon_on_cancel=True
            ):
                await call.send({"data": block})
            await call.send_end()

        answer = await self._answer("add_stream", {"name": name, "pin": pin}, feed=feed)
        return from_wire(Added, answer)

    async def fetch(
        self, cid: Cid, span: Span, progress: OnProgress = _ignore, output: str | None = None
    ) -> Fetched:
        held = self._held(cid)
        if held is not None:  # complete here already: the node has nothing to do
            return held
        args: dict[str, Any] = {"cid": cid} if span is None else {"cid": cid, "range": list(span)}
        if output is not None:
            args["output"] = output
        return await self._one(Fetched, "fetch", args, progress)

    def _store(self) -> BlobStore:
        """The daemon's store, read-only (its module loaded here: most commands
        never read a blob)."""
        from hearthfile.blobs.store import BlobStore

        return BlobStore(self.data_dir, readonly=True)

    def _held(self, cid: Cid) -> Fetched | None:
        store = self._store()
        try:
            if not store.has_blob(cid):
                return None
            info = store.stat(cid)
            return Fetched(cid, info.size, info.name)
        finally:
            store.close()

    async def export(self, cid: Cid, write: Write) -> None:
        store = self._store()
        try:
            for view in store.export(cid):
                write(view)
        finally:
            store.close()

    async def read(self, cid: Cid, span: Span, write: Write) -> None:
        store = self._store()
        try:
            if store.has_blob(cid):  # held here: straight from the store, no fetch call
                _write_span(store, cid, span, write)
                return
            if span is not None:
                await self.fetch(cid, span)
                _write_span(store, cid, span, write)
                return
            write_ready = _ReadyWriter(store, cid, write)
            conn = await self.link.connection()
            async with conn.open_call("node.fetch", {"cid": cid, "stream": True}) as call:
                async for _ in call:
                    write_ready()
                await call.result()
            write_ready()
        finally:
            store.close()

    async def pin(self, cid: Cid) -> PinState:
        return await self._one(PinState, "pin", {"cid": cid})

    async def unpin(self, cid: Cid) -> PinState:
        return await self._one(PinState, "unpin", {"cid": cid})

    async def rm(self, cid: Cid) -> Removed:
        return await self._one(Removed, "rm", {"cid": cid})

    async def gc(self, everything: bool) -> GcResult:
        return await self._one(GcResult, "gc", {"all": everything})

    async def verify(self, repair: bool) -> VerifyResult:
        return await self._one(VerifyResult, "verify", {"repair": True} if repair else {})

    async def status(self) -> NodeStatus:
        return await self._one(NodeStatus, "status", {})

    async def peers(self) -> list[PeerRow]:
        return await self._many(PeerRow, "peers", {})

    async def push(self, cid: Cid, to: NodeId, progress: OnProgress = _ignore) -> Pushed:
        return await self._one(Pushed, "push", {"cid": cid, "to": str(to)}, progress)

    async def trust(self, node: NodeId, level: str) -> TrustChanged:
        args = {"node_id": str(node), "level": level}
        return await self._one(TrustChanged, "trust", args)

    async def untrust(self, node: NodeId) -> TrustChanged:
        return await self._one(TrustChanged, "untrust", {"node_id": str(node)})

    async def trusted(self) -> list[TrustRow]:
        rows: list[TrustRow] = []
        after = ""
        while True:  # page by page, as node.trusted answers them
            answer = await self._answer("trusted", {"after": after})
            rows += [from_wire(TrustRow, item) for item in answer.get("items", [])]
            following = answer.get("next")
            if not isinstance(following, str) or following <= after:
                return rows
            after = following

    async def invite(self, level: str, uses: int, ttl_s: float) -> Invitation:
        args = {"level": level, "uses": uses, "ttl_s": ttl_s}
        return await self._one(Invitation, "invite", args)

    async def join(self, token: str) -> Joined:
        return await self._one(Joined, "join", {"token": token})

    async def download(self, request: DownloadRequest) -> DownloadRecord:
        return await self._one(DownloadRecord, "download", dict(request))

    async def downloads(self) -> list[DownloadRecord]:
        return await self._many(DownloadRecord, "downloads", {})

    async def download_op(self, action: str, id_: str) -> DownloadRecord:
        return await self._one(DownloadRecord, f"download.{action}", {"id": id_})

    async def download_wait(self, id_: str, timeout_s: float) -> DownloadRecord:
        args = {"id": id_, "timeout_s": timeout_s}
        return await self._one(DownloadRecord, "download.wait", args)

    async def download_remove(self, id_: str) -> DownloadRemoved:
        return await self._one(DownloadRemoved, "download.remove", {"id": id_})

    async def transfers(self) -> list[TransferState]:
        return await self._many(TransferState, "transfers", {})

    async def cancel(self, cid: Cid) -> Cancelled:
        return await self._one(Cancelled, "cancel", {"cid": cid})

    async def whohas(self, cid: Cid) -> list[Holder]:
        return await self._many(Holder, "whohas", {"cid": cid})

    async def events(self, follow: bool, on_event: OnEvent) -> None:
        conn = await self.link.connection()
        async with conn.open_call("node.events", {"follow": follow}) as call:
            async for event in call:
                if not isinstance(event, dict):
                    raise RemoteProtocolError("node.events sent a non-map item")
                on_event(event)
            await call.result()


class _ReadyWriter:
    """Writes out, in order, the chunks of a blob being fetched as they are stored
    (its manifest read once; each call writes the run now held)."""

    def __init__(self, store: BlobStore, cid: Cid, write: Write) -> None:
        self._store, self._cid, self._write = store, cid, write
        self._manifest: Manifest | None = None
        self._next = 0

    def __call__(self) -> None:
        store = self._store
        if self._manifest is None:
            try:
                self._manifest = store.read_manifest(self._cid)
            except BlobError:
                return  # the manifest is not in yet
        missing = set(store.missing_chunks(self._cid))
        count = len(self._manifest.chunks)
        while self._next < count and self._next not in missing:
            run = range(self._next, min(self._next + 8, count))
            run = range(run.start, next((i for i in run if i in missing), run.stop))
            for data in store.read_chunks(self._manifest, list(run)):
                self._write(data)
            self._next = run.stop


@contextlib.asynccontextmanager
async def open_client(home: Path) -> AsyncIterator[NodeClient]:
    """The home's daemon when one runs, else its store."""
    info = node_home.daemon_info(home)
    if info is None:
        local = LocalClient(home)
        try:
            yield local
        finally:
            local.close()
        return
    async with trio.open_nursery() as nursery:
        yield BusClient(home, DaemonLink(home, info, nursery), info.data_dir)
        nursery.cancel_scope.cancel()


def _self_only(me: NodeId) -> Callable[[NodeId], TrustLevel]:
    from hearthfile.bus.capability import TrustLevel

    return lambda node: TrustLevel.SELF if node == me else TrustLevel.STRANGER
