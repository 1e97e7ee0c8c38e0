"""The ``hearthfile`` command line (DESIGN.md section 8).

Commands, flags and exit codes are a contract: 0 ok, 1 the operation failed,
2 usage or configuration error. Every failure is one line on stderr, never a
traceback. Global options come before the command.

When a daemon runs for the home, commands go to it over the bus, signed with
the node's own key (trust ``self``); otherwise store commands work directly on
the store and network commands say that no daemon runs. Both ways go through
``NodeApi``, so each command has one piece of output code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final, NoReturn, Protocol

import trio

from hearthfile import home as node_home
from hearthfile.blobs.backend import SequentialWriter
from hearthfile.blobs.chunker import BlobError
from hearthfile.blobs.store import BlobStore, PinnedError, StoreLocked
from hearthfile.cids import Cid, CidError, parse_cid
from hearthfile.config import ConfigError, load_config, with_overrides
from hearthfile.errors import HearthError, PeerUnavailable, RemoteProtocolError, ServiceError
from hearthfile.identity import IdentityError, NodeId, NodeKey
from hearthfile.services import ops
from hearthfile.services.http import HttpListenError

if TYPE_CHECKING:  # the bus and the daemon load only when a command needs them
    from hearthfile.bus.connection import Connection

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
#: Below this size a progress bar would only flicker.
PROGRESS_MIN_BYTES = 16 * 1024 * 1024
#: CIDs fetched at once by one ``get`` of many CIDs.
GET_CONCURRENCY = 8


class CliError(HearthError):
    """A failure to report as one line, with its exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"hearthfile: {message} (see 'hearthfile --help')\n")


def home_dir(args: argparse.Namespace) -> Path:
    text = args.home or os.environ.get("HEARTHFILE_HOME") or str(Path.home() / ".hearthfile")
    return Path(text).expanduser().absolute()


def cid_arg(text: str) -> Cid:
    try:
        return parse_cid(text)
    except CidError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


# -- the node, local or remote ---------------------------------------------------


class NodeApi(Protocol):
    async def call(self, op: str, args: dict[str, Any]) -> Any: ...

    def stream(
        self, op: str, args: dict[str, Any]
    ) -> contextlib.AbstractAsyncContextManager[AsyncIterator[Any]]: ...


class LocalNode:
    """The store itself, when no daemon runs."""

    NETWORK_OPS = frozenset({"status", "peers", "push", "transfers", "cancel", "whohas", "events"})

    def __init__(self, store: BlobStore, home: Path) -> None:
        self.store = store
        self.home = home

    async def call(self, op: str, args: dict[str, Any]) -> Any:
        if op in self.NETWORK_OPS:
            raise CliError(f"no daemon running for {self.home}")
        if op == "fetch":
            span = args.get("range")
            try:
                next(iter(self.store.read_blob_stream(args["cid"], *(span or (0, None)))), None)
            except BlobError:  # not all here, and no daemon to fetch it
                raise BlobError("not_found", args["cid"]) from None
            return ops.info_dict(self.store.stat(args["cid"]))
        if op == "add":
            return {"cids": ops.add_paths(self.store, args["paths"], pin=args["pin"])}
        if op == "gc":
            return ops.gc(self.store, args["all"])
        if op in ("ls", "verify"):
            return getattr(ops, op)(self.store, *args.values())
        return getattr(ops, op)(self.store, args["cid"])

    @contextlib.asynccontextmanager
    async def stream(self, op: str, args: dict[str, Any]) -> AsyncIterator[AsyncIterator[Any]]:
        assert op == "cat"
        yield _blob_items(self.store, args["cid"], args.get("range"))


async def _blob_items(
    store: BlobStore, cid: Cid, span: list[int] | None
) -> AsyncIterator[dict[str, Any]]:
    start, end = (0, None) if span is None else span
    for view in store.read_blob_stream(cid, start, end):
        yield {"data": view}


class RemoteNode:
    """The home's daemon, over the bus; blob bytes are read from its store directly
    (read-only), which spares them a trip through the encrypted channel."""

    def __init__(self, conn: Connection, data_dir: Path) -> None:
        self.conn = conn
        self.data_dir = data_dir

    async def call(self, op: str, args: dict[str, Any]) -> Any:
        if op in ("fetch", "push"):
            async with self.stream(op, args) as items:
                async for _ in items:
                    pass
                return self.last_result
        if op in ops.PAGED_RESULTS:
            return await self._paged(op, args)
        if op == "add":
            cids: list[str] = []
            for batch in ops.pages(args["paths"], ADD_BATCH_BYTES, _path_bytes):
                result = await self.conn.call("node.add", {**args, "paths": batch})
                cids.extend(result["cids"])
            return {"cids": cids}
        return await self.conn.call(f"node.{op}", args)

    async def _paged(self, op: str, args: dict[str, Any]) -> Any:
        """A result whose lists arrive as pages: the same shape a local call returns."""
        lists: dict[str, list[Any]] = {key: [] for key in ops.PAGED_RESULTS[op]}
        async with self.conn.open_call(f"node.{op}", args) as call:
            async for page in call:
                for key, values in page.items():
                    lists[key].extend(values)
            result = await call.result()
        if ops.PAGED_RESULTS[op] == ("items",):
            return lists["items"]  # the list is the whole result
        return {**result, **lists}

    @contextlib.asynccontextmanager
    async def stream(self, op: str, args: dict[str, Any]) -> AsyncIterator[AsyncIterator[Any]]:
        if op == "cat":
            store = BlobStore(self.data_dir, readonly=True)
            try:
                yield _blob_items(store, args["cid"], args.get("range"))
            finally:
                store.close()
            return
        async with self.conn.open_call(f"node.{op}", args) as call:

            async def items() -> AsyncIterator[Any]:
                async for item in call:
                    yield item
                self.last_result = await call.result()

            yield items()

    last_result: Any = None


#: Bytes of paths per ``node.add`` call: a request must fit in one frame.
ADD_BATCH_BYTES: Final = 128 * 1024


def _path_bytes(path: str) -> int:
    return len(path.encode(errors="surrogateescape")) + 5


@contextlib.asynccontextmanager
async def open_node(args: argparse.Namespace) -> AsyncIterator[NodeApi]:
    home = home_dir(args)
    info = node_home.daemon_info(home)
    if info is None:
        with _local_store(home) as store:
            yield LocalNode(store, home)
        return
    from hearthfile.bus.capability import Registry
    from hearthfile.bus.client import open_secure_channel
    from hearthfile.bus.connection import Connection

    key = _load_key(home)
    try:
        via = node_home.control_socket(home)  # our own way in, whatever strangers do
        via = via if via is not None and via.exists() else None
        async with open_secure_channel(
            info.address, key, expected_peer=key.node_id, via=via
        ) as channel:
            conn = Connection(channel, Registry(), _self_only(key.node_id), initiator=True)
            async with trio.open_nursery() as nursery:
                await nursery.start(conn.serve)
                yield RemoteNode(conn, info.data_dir)
                nursery.cancel_scope.cancel()
    except PeerUnavailable as exc:
        raise CliError(f"cannot reach the daemon for {home} at {info.address}: {exc}") from None


def _self_only(me: NodeId) -> Callable[[NodeId], Any]:
    from hearthfile.bus.capability import TrustLevel

    return lambda node: TrustLevel.SELF if node == me else TrustLevel.STRANGER


@contextlib.contextmanager
def _local_store(home: Path) -> Iterator[BlobStore]:
    try:
        store = BlobStore(home / "data")
    except StoreLocked as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot open store in {home}: {exc.strerror}") from None
    try:
        yield store
    finally:
        store.close()


def _load_key(home: Path) -> NodeKey:
    try:
        return NodeKey.load(home / node_home.KEY_FILE)
    except IdentityError as exc:
        raise CliError(str(exc)) from None


# -- output helpers ------------------------------------------------------------------


class ProgressBar:
    """A rich progress bar on stderr, shown only on a terminal and for large jobs.

    Created lazily from the first update, which carries the total.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self._bar: Any = None
        self._task: Any = None

    def update(self, done: int, total: int) -> None:
        if self._bar is None:
            if total < PROGRESS_MIN_BYTES or not sys.stderr.isatty():
                return
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._bar = Progress(
                TextColumn(self.label),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=total)
        self._bar.update(self._task, completed=done)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def _print_json(value: object) -> None:
    print(json.dumps(value, sort_keys=True))


# -- commands --------------------------------------------------------------------------


async def cmd_init(args: argparse.Namespace) -> int:
    home = home_dir(args)
    (home / "data").mkdir(parents=True, exist_ok=True)
    key = node_home.load_or_create_key(home)
    node_home.load_or_create_http_token(home)
    print(f"initialised {home}\nnode id {key.node_id}")
    return EXIT_OK


async def cmd_id(args: argparse.Namespace) -> int:
    print(_load_key(home_dir(args)).node_id)
    return EXIT_OK


async def cmd_add(args: argparse.Namespace) -> int:
    paths = [str(p.absolute()) for p in ops.check_paths(args.paths)]
    async with open_node(args) as node:
        result = await node.call("add", {"paths": paths, "pin": args.pin})
    print("\n".join(result["cids"]))
    return EXIT_OK


async def cmd_cat(args: argparse.Namespace) -> int:
    cid = cid_arg(args.cid)
    out = sys.stdout.buffer
    async with open_node(args) as node:
        try:
            if isinstance(node, RemoteNode):
                await _stream_while_fetching(node, cid, out)
            else:
                await _copy_blob(node, cid, out.write, None)
            out.flush()
        except BrokenPipeError:
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
    return EXIT_OK


async def _stream_while_fetching(node: RemoteNode, cid: Cid, out: BinaryIO) -> None:
    """Write the blob in order as its chunks land, while the daemon fetches it."""
    store = BlobStore(node.data_dir, readonly=True)
    try:
        written = 0
        async with node.stream("fetch", {"cid": cid, "stream": True}) as progress:
            async for _ in progress:
                written = _write_ready(store, cid, out, written)
        written = _write_ready(store, cid, out, written)
    finally:
        store.close()


def _write_ready(store: BlobStore, cid: Cid, out: BinaryIO, start: int) -> int:
    """Write chunks ``start``, ``start + 1``, ... that are stored; return the next index."""
    try:
        manifest = store.read_manifest(cid)
    except BlobError:
        return start  # the manifest is not in yet
    index = start
    while index < len(manifest.chunks) and store.has_chunk(manifest.chunks[index]):
        out.write(store.read_chunk(manifest.chunks[index]))
        index += 1
    return index


def _parse_span(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    start, sep, end = text.partition("-")
    if not sep or not start.isdigit() or not end.isdigit() or int(end) < int(start):
        raise CliError(
            f"--range expects START-END in bytes (END exclusive), got {text!r}", EXIT_USAGE
        )
    return int(start), int(end)


async def cmd_get(args: argparse.Namespace) -> int:
    cids = [cid_arg(c) for c in args.cids]
    span = _parse_span(args.range)
    direct = load_config(home_dir(args)).file.direct_io
    if len(cids) == 1:
        async with open_node(args) as node:
            await _get_one(node, cids[0], args.output, Path("."), span, many=False, direct=direct)
        return EXIT_OK
    out_dir = Path(args.output or ".")
    out_dir.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    async with open_node(args) as node:
        limiter = trio.CapacityLimiter(GET_CONCURRENCY)

        async def one(cid: Cid) -> None:
            async with limiter:
                try:
                    await _get_one(node, cid, None, out_dir, span, many=True, direct=direct)
                except (ServiceError, BlobError, CliError) as exc:
                    failures.append(f"{cid}: {_describe(exc)}")

        async with trio.open_nursery() as nursery:
            for cid in cids:
                nursery.start_soon(one, cid)
    for line in failures:
        print(f"hearthfile: {line}", file=sys.stderr)
    return EXIT_FAILED if failures else EXIT_OK


async def _get_one(
    node: NodeApi,
    cid: Cid,
    output: str | None,
    out_dir: Path,
    span: tuple[int, int] | None,
    *,
    many: bool,
    direct: bool,
) -> None:
    info = await _fetch(node, cid, span, show=not many)
    dest = _destination(output, out_dir, info, many)
    await _save(node, cid, dest, span, direct=direct)
    if dest is not None:
        print(dest, flush=True)


async def _fetch(
    node: NodeApi, cid: Cid, span: tuple[int, int] | None, *, show: bool
) -> dict[str, Any]:
    args: dict[str, Any] = {"cid": cid} if span is None else {"cid": cid, "range": list(span)}
    if isinstance(node, RemoteNode):
        with ProgressBar(f"get {cid[7:19]}") as bar:
            async with node.stream("fetch", args) as items:
                async for state in items:
                    if show:
                        bar.update(state["done_bytes"], state["total_bytes"])
        return dict(node.last_result)
    return dict(await node.call("fetch", args))


def _destination(
    output: str | None, out_dir: Path, info: dict[str, Any], many: bool
) -> Path | None:
    """Where ``get`` writes a blob; None for standard output (``-o -``)."""
    if many or not output:
        return out_dir / _name(info)
    if output == "-":
        return None
    dest = Path(output)
    return dest / _name(info) if dest.is_dir() else dest


def _name(info: dict[str, Any]) -> str:
    name = Path(info.get("name") or "").name
    return name if name not in ("", ".", "..") else str(info["cid"]).removeprefix("blake3:")


async def _save(
    node: NodeApi,
    cid: Cid,
    dest: Path | None,
    span: tuple[int, int] | None = None,
    *,
    direct: bool = True,
) -> None:
    """Write a blob to ``dest`` without ever leaving a half-written regular file.

    A regular file (or a new path) is filled under a temporary name beside it and
    renamed into place, whole chunks past the page cache when ``direct`` (config
    ``file.direct_io``, as for the store). Anything else that exists (``/dev/null``, a FIFO, a
    terminal) is written in place: renaming over it would replace the device.
    """
    if dest is None:
        await _copy_blob(node, cid, sys.stdout.buffer.write, span)
        sys.stdout.buffer.flush()
        return
    if dest.is_char_device() or dest.is_fifo() or dest.is_socket():
        with open(dest, "wb") as out:
            await _copy_blob(node, cid, out.write, span)
        return
    tmp = dest.with_name(f".{dest.name}.hearthfile-tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            await _copy_blob(node, cid, SequentialWriter(fd, direct=direct).write, span)
        finally:
            os.close(fd)
        os.replace(tmp, dest)
    except OSError as exc:
        raise CliError(f"cannot write {dest}: {exc.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)


async def _copy_blob(
    node: NodeApi, cid: Cid, write: Callable[[Any], object], span: tuple[int, int] | None
) -> None:
    args: dict[str, Any] = {"cid": cid} if span is None else {"cid": cid, "range": list(span)}
    async with node.stream("cat", args) as items:
        async for item in items:
            write(item["data"])


async def cmd_ls(args: argparse.Namespace) -> int:
    async with open_node(args) as node:
        infos = await node.call("ls", {"prefix": args.prefix or ""})
    if args.json:
        _print_json(infos)
        return EXIT_OK
    lines = [
        f"{i['cid']}  {i['size']:>14}  {'pinned' if i['pinned'] else '-':6}  {i['name'] or ''}"
        for i in infos
    ]
    if lines:  # one write: a store may list hundreds of thousands
        sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK


async def cmd_stat(args: argparse.Namespace) -> int:
    async with open_node(args) as node:
        info = await node.call("stat", {"cid": cid_arg(args.cid)})
    if args.json:
        _print_json(info)
    else:
        for key, value in info.items():
            print(f"{key:12} {value}")
    return EXIT_OK


async def cmd_cid_op(args: argparse.Namespace) -> int:
    cid = cid_arg(args.cid)
    async with open_node(args) as node:
        result = await node.call(args.command, {"cid": cid})
    if args.json:
        _print_json(result)
    elif args.command == "rm":
        print(f"removed {cid} ({result['bytes_freed']} bytes freed)")
    else:
        print(f"{args.command}ned {cid}")
    return EXIT_OK


async def cmd_gc(args: argparse.Namespace) -> int:
    async with open_node(args) as node:
        result = await node.call("gc", {"all": args.all})
    if args.json:
        _print_json(result)
    else:
        print(f"removed {len(result['removed'])} blobs, {result['bytes_freed']} bytes freed")
    return EXIT_OK


async def cmd_verify(args: argparse.Namespace) -> int:
    async with open_node(args) as node:
        r = await node.call("verify", {})
    for line in r["corrupt"] + r["missing"]:
        print(f"bad: {line}", file=sys.stderr)
    if args.json:
        _print_json(r)
    else:
        print(
            f"checked {r['chunks_checked']} chunks and {r['manifests_checked']} manifests: "
            f"{len(r['corrupt'])} corrupt, {len(r['missing'])} missing, "
            f"{r['manifests_restored']} manifests restored, "
            f"{r['untracked_removed']} untracked files removed"
        )
    return EXIT_OK if r["clean"] else EXIT_FAILED


async def cmd_status(args: argparse.Namespace) -> int:
    async with open_node(args) as node:
        result = await node.call("status", {})
    if args.json:
        _print_json(result)
    else:
        for key, value in result.items():
            print(f"{key:14} {value}")
    return EXIT_OK


async def cmd_peers(args: argparse.Namespace) -> int:
    async with open_node(args) as node:
        rows = await node.call("peers", {})
    if args.json:
        _print_json(rows)
        return EXIT_OK
    for r in rows:
        print(
            f"{r['node_id']}  {r['remote']:21}  {r['direction']:3}  {r['trust']:8}  "
            f"in={r['bytes_in']} out={r['bytes_out']}"
        )
    return EXIT_OK


async def cmd_push(args: argparse.Namespace) -> int:
    cid = cid_arg(args.cid)
    try:
        NodeId.parse(args.to)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    async with open_node(args) as node:
        if isinstance(node, LocalNode):
            raise CliError(f"no daemon running for {node.home}")
        assert isinstance(node, RemoteNode)
        with ProgressBar(f"push {cid[7:19]}") as bar:
            async with node.stream("push", {"cid": cid, "to": args.to}) as items:
                async for state in items:
                    bar.update(state["done_bytes"], state["total_bytes"])
        result = node.last_result
    if args.json:
        _print_json(result)
    else:
        print(
            f"pushed {cid} to {args.to}: {result['sent']} chunks sent, "
            f"{result['skipped']} skipped (already there)"
        )
    return EXIT_OK


async def cmd_transfers(args: argparse.Namespace) -> int:
    async with open_node(args) as node:
        rows = await node.call("transfers", {})
    if args.json:
        _print_json(rows)
    for r in [] if args.json else rows:
        print(
            f"{r['cid']}  {r['done_bytes']}/{r['total_bytes']} bytes  "
            f"{r['chunks_done']}/{r['chunks_total']} chunks  {r['sources']} sources"
        )
    return EXIT_OK


async def cmd_cancel(args: argparse.Namespace) -> int:
    cid = cid_arg(args.cid)
    async with open_node(args) as node:
        await node.call("cancel", {"cid": cid})
    print(f"cancelled the fetch of {cid}")
    return EXIT_OK


async def cmd_whohas(args: argparse.Namespace) -> int:
    cid = cid_arg(args.cid)
    async with open_node(args) as node:
        rows = await node.call("whohas", {"cid": cid})
    if args.json:
        _print_json(rows)
    for row in [] if args.json else rows:
        print(f"{row['node_id']}  {row['age_s']:.0f}s")
    return EXIT_OK


async def cmd_events(args: argparse.Namespace) -> int:
    async with open_node(args) as node:
        if isinstance(node, LocalNode):
            raise CliError(f"no daemon running for {node.home}")
        async with node.stream("events", {"follow": args.follow}) as items:
            async for event in items:
                if args.json:
                    print(json.dumps(event, sort_keys=True), flush=True)
                    continue
                fields = " ".join(
                    f"{k}={v}" for k, v in event.items() if k not in ("seq", "at", "event")
                )
                stamp = time.strftime("%H:%M:%S", time.localtime(event["at"]))
                print(f"{stamp} {event['event']} {fields}", flush=True)
    return EXIT_OK


async def cmd_run(args: argparse.Namespace) -> int:
    home = home_dir(args)
    config = with_overrides(
        _config(args, home), listen=args.listen, peers=args.peer or None, http=args.http
    )
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    try:
        from hearthfile import node as daemon

        await daemon.run_until_signalled(home, config)
    except* (node_home.DaemonRunning, HttpListenError) as group:
        raise CliError(str(_first_leaf(group))) from None
    except* OSError as group:
        reason = getattr(_first_leaf(group), "strerror", "")
        raise CliError(f"cannot listen on {config.node.listen}: {reason}") from None
    return EXIT_OK


def _first_leaf(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first exception in a (nested) group: the daemon's nurseries wrap a
    start-up error, which the operator should see as one line."""
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


def _config(args: argparse.Namespace, home: Path) -> Any:
    return load_config(home, Path(args.config) if args.config else None)


# -- parser ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hearthfile", description="A peer-to-peer content-addressed blob node.")
    parser.add_argument("--home", help="node home (default $HEARTHFILE_HOME or ~/.hearthfile)")
    parser.add_argument("--json", action="store_true", help="print data as JSON")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    json_flag = _Parser(add_help=False)
    json_flag.add_argument("--json", action="store_true", default=argparse.SUPPRESS)

    def command(name: str, func: Any, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, parents=[json_flag])
        p.set_defaults(func=func)
        return p

    command("init", cmd_init, "create the node's home, key and store")
    command("id", cmd_id, "print this node's NodeID")
    command("status", cmd_status, "the running daemon's state")
    command("peers", cmd_peers, "connected peers")
    p = command("run", cmd_run, "run the daemon")
    p.add_argument("--listen", metavar="HOST:PORT")
    p.add_argument("--http", metavar="HOST:PORT|off", help="HTTP gateway (default 127.0.0.1:7780)")
    p.add_argument("--peer", action="append", metavar="HOST:PORT", help="bootstrap peer (repeat)")
    p.add_argument("--config", metavar="FILE", help="config file (default <home>/config.yaml)")
    p = command("add", cmd_add, "add files; prints each blob CID")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--pin", action="store_true", help="protect the blob from GC")
    command("cat", cmd_cat, "write a blob's bytes to stdout").add_argument("cid", metavar="CID")
    p = command("get", cmd_get, "fetch blobs (from peers if not local) and write them to files")
    p.add_argument("cids", nargs="+", metavar="CID")
    p.add_argument("-o", "--output", metavar="PATH", help="file (one CID) or directory (many)")
    p.add_argument("--range", metavar="START-END", help="only bytes START..END-1 (one CID)")
    p = command("ls", cmd_ls, "list stored blobs")
    p.add_argument("prefix", nargs="?", metavar="PREFIX")
    command("stat", cmd_stat, "show a blob's metadata").add_argument("cid", metavar="CID")
    command("pin", cmd_cid_op, "protect a blob from GC").add_argument("cid", metavar="CID")
    command("unpin", cmd_cid_op, "let GC evict a blob again").add_argument("cid", metavar="CID")
    command("rm", cmd_cid_op, "remove an unpinned blob now").add_argument("cid", metavar="CID")
    p = command("gc", cmd_gc, "evict least-recently-used unpinned blobs down to the target")
    p.add_argument("--all", action="store_true", help="remove every unpinned blob")
    command("verify", cmd_verify, "re-hash everything; move corrupt files aside")
    p = command("push", cmd_push, "send a blob to a peer that trusts this node")
    p.add_argument("cid", metavar="CID")
    p.add_argument("--to", required=True, metavar="NODEID")
    command("transfers", cmd_transfers, "fetches under way")
    command("whohas", cmd_whohas, "known sources of a blob, with age").add_argument(
        "cid", metavar="CID"
    )
    p = command("events", cmd_events, "the node's event stream (adverts, peers, transfers)")
    p.add_argument("--follow", action="store_true", help="keep printing new events")
    command("cancel", cmd_cancel, "stop a fetch under way").add_argument("cid", metavar="CID")
    from hearthfile import cli_trust  # its commands import this module's helpers

    cli_trust.add_commands(command)
    from hearthfile import cli_downloads

    cli_downloads.add_commands(command)
    return parser


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ServiceError):
        if exc.code == "not_found":
            return f"not found: {exc.detail}"
        return f"{exc.code.replace('_', ' ')}: {exc.detail}" if exc.detail else exc.code
    if isinstance(exc, BlobError):
        if exc.code == "not_found":
            return f"not found: {exc.detail}"
        return f"{exc.code.replace('_', ' ')}: {exc.detail}"
    return str(exc)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(trio.run(args.func, args))
    except CliError as exc:
        return _fail(str(exc), exc.code)
    except (ConfigError, CidError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except ops.PathError as exc:
        return _fail(str(exc), EXIT_USAGE if exc.usage else EXIT_FAILED)
    except (BlobError, ServiceError, PinnedError, StoreLocked, IdentityError) as exc:
        return _fail(_describe(exc))
    except (PeerUnavailable, RemoteProtocolError) as exc:
        return _fail(f"connection to the daemon failed: {exc}")
    except KeyboardInterrupt:
        return _fail("interrupted", 130)


def _fail(message: str, code: int = EXIT_FAILED) -> int:
    print(f"hearthfile: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
