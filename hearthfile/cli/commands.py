"""The commands of DESIGN.md section 8: each turns its arguments into client calls
and prints the results through ``Output``. None of them knows whether a daemon runs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

import trio

from hearthfile import home as node_home
from hearthfile.blobs.chunker import BlobError
from hearthfile.blobs.files import SequentialWriter
from hearthfile.cids import Cid
from hearthfile.cli.client import NodeClient, Span, Write, open_client
from hearthfile.cli.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    describe,
    describe_os_error,
    first_failure,
)
from hearthfile.cli.local import cid_arg, home_dir, load_key
from hearthfile.cli.output import Output, ProgressBar, event_json, human_bytes, iso_time
from hearthfile.errors import ServiceError
from hearthfile.identity import NodeId
from hearthfile.services import ops
from hearthfile.services.results import Added, Fetched, VerifyResult

if TYPE_CHECKING:  # loaded by the commands that read the config (run, get)
    from hearthfile.config import Config

#: CIDs fetched at once by one ``get`` of many CIDs.
GET_CONCURRENCY: Final = 8
#: How long ``stop`` waits for the daemon to let go of its home.
STOP_TIMEOUT_S: Final = 30.0


def node_arg(text: str) -> NodeId:
    try:
        return NodeId.parse(text)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


async def cmd_init(args: argparse.Namespace, out: Output) -> int:
    home = home_dir(args)
    try:
        (home / "data").mkdir(parents=True, exist_ok=True)
        key = node_home.load_or_create_key(home)
        node_home.load_or_create_http_token(home)
    except OSError as exc:
        raise CliError(f"cannot create a node in {home}: {exc.strerror or exc}") from None
    if out.json:
        out.data({"home": str(home), "node_id": str(key.node_id)})
    else:
        out.line(f"initialised {home}\nnode id {key.node_id}")
    return EXIT_OK


async def cmd_id(args: argparse.Namespace, out: Output) -> int:
    node_id = str(load_key(home_dir(args)).node_id)
    if out.json:
        out.data({"node_id": node_id})
    else:
        out.line(node_id)
    return EXIT_OK


async def cmd_add(args: argparse.Namespace, out: Output) -> int:
    """Files by path (the node reads them), directories file by file, and ``-``,
    pipes and devices streamed by the CLI: the node never reads its own stdin."""
    inputs, skipped = ops.expand_inputs(args.paths)
    for line in skipped:
        print(f"hearthfile: skipped {line}", file=sys.stderr)
    if not inputs:
        raise CliError(f"nothing to add in {' '.join(args.paths)}")
    pin = not args.no_pin
    cids: list[Cid] = []
    async with open_client(home_dir(args)) as node:
        for run in _runs(inputs):
            if isinstance(run, str):
                cids += (await _add_stream(node, run, pin)).cids
                continue
            cids += (await _add_files(node, run, pin)).cids
    out.show(Added(cids), lambda a: "\n".join(a.cids))
    return EXIT_OK


def _runs(inputs: list[str]) -> list[list[str] | str]:
    """Consecutive regular files as one list (one call), each stream on its own."""
    runs: list[list[str] | str] = []
    for text in inputs:
        if not ops.is_regular_file(text):
            runs.append(text)
        elif runs and isinstance(runs[-1], list):
            runs[-1].append(text)
        else:
            runs.append([text])
    return runs


async def _add_files(node: NodeClient, run: list[str], pin: bool) -> Added:
    """Regular files, read by the node; if it cannot read them the way the CLI sees
    them (another user, another mount namespace), the CLI streams each one."""
    try:
        with ProgressBar("add") as bar:
            paths = [str(Path(p).absolute()) for p in run]
            return await node.add(paths, pin=pin, progress=bar.added)
    except ServiceError as exc:
        if exc.code != "bad_request" or not exc.detail.startswith("cannot read"):
            raise
    cids: list[Cid] = []
    for text in run:
        cids += (await _add_stream(node, text, pin)).cids
    return Added(cids)


async def _add_stream(node: NodeClient, text: str, pin: bool) -> Added:
    if text == "-":
        return await node.add_stream(sys.stdin.buffer, None, pin=pin)
    try:
        # A FIFO's open waits for its writer: in a thread, so that Ctrl-C always ends
        # the wait (a signal trio takes while the main thread sits in open() would not).
        stream = await trio.to_thread.run_sync(_open_stream, text, abandon_on_cancel=True)
    except OSError as exc:
        raise ops.PathError(f"cannot read {text}: {exc.strerror}") from None
    with stream:
        return await node.add_stream(stream, Path(text).name, pin=pin)


def _open_stream(path: str) -> io.BufferedReader:
    return open(path, "rb")


async def cmd_cat(args: argparse.Namespace, out: Output) -> int:
    cid = cid_arg(args.cid)
    async with open_client(home_dir(args)) as node:
        await node.read(cid, None, out.write_bytes)
    out.flush()
    return EXIT_OK


def parse_span(text: str | None) -> Span:
    """``START-END``, inclusive as HTTP's: the [start, end) it names."""
    if text is None:
        return None
    start, sep, end = text.partition("-")
    if not sep or not start.isdigit() or not end.isdigit() or int(end) < int(start):
        raise CliError(f"--range expects START-END in bytes (inclusive), got {text!r}", EXIT_USAGE)
    return int(start), int(end) + 1


def check_span(span: Span, got: Fetched) -> None:
    if span is not None and span[1] > got.size:
        raise CliError(f"range {span[0]}-{span[1] - 1} is outside {got.cid} ({got.size} bytes)")


async def cmd_get(args: argparse.Namespace, out: Output) -> int:
    cids = [cid_arg(c) for c in args.cids]
    span = parse_span(args.range)
    if span is not None and len(cids) > 1:
        raise CliError("--range takes one CID", EXIT_USAGE)
    direct = _config(args, home_dir(args)).file.direct_io
    getter = _Getter(args, out, span, direct)
    async with open_client(home_dir(args)) as node:
        if len(cids) == 1:
            await getter.one(node, cids[0], many=False)
            return EXIT_OK
        Path(args.output or ".").mkdir(parents=True, exist_ok=True)
        limiter = trio.CapacityLimiter(GET_CONCURRENCY)
        failures: list[str] = []

        async def one(cid: Cid) -> None:
            async with limiter:
                try:
                    await getter.one(node, cid, many=True)
                except (ServiceError, BlobError, CliError) as exc:
                    failures.append(f"{cid}: {describe(exc)}")

        async with trio.open_nursery() as nursery:
            for cid in cids:
                nursery.start_soon(one, cid)
    for line in failures:
        print(f"hearthfile: {line}", file=sys.stderr)
    return EXIT_FAILED if failures else EXIT_OK


class _Getter:
    """``get``: fetch, then write each blob where it belongs."""

    def __init__(self, args: argparse.Namespace, out: Output, span: Span, direct: bool) -> None:
        self.output: str | None = args.output
        self.force: bool = args.force
        self.pin: bool = args.pin
        self.out = out
        self.span = span
        self.direct = direct

    async def one(self, node: NodeClient, cid: Cid, *, many: bool) -> None:
        early = self.destination(cid, None, many)
        if early is not None:
            self.refuse_overwrite(early)
        tmp = self.node_writes(early, many)
        try:
            await self._one(node, cid, many, early, tmp)
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)

    def node_writes(self, early: Path | None, many: bool) -> Path | None:
        """The temporary file the node may write the blob to as it fetches it (for
        ``-o FILE`` of a whole blob: no second pass over the bytes), else None."""
        if many or self.span is not None or early is None or self.output in (None, "-"):
            return None
        if early.exists() and not early.is_file():
            return None  # a device or a FIFO is written in place, by ``save``
        tmp = early.with_name(f".{early.name}.hearthfile-tmp").absolute()
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666))
        except OSError as exc:
            raise CliError(f"cannot write {early}: {exc.strerror}") from None
        return tmp

    async def _one(
        self, node: NodeClient, cid: Cid, many: bool, early: Path | None, tmp: Path | None
    ) -> None:
        with ProgressBar(f"get {cid[7:19]}", enabled=not many) as bar:
            try:
                got = await node.fetch(cid, self.span, bar.transfer, str(tmp) if tmp else None)
            except ServiceError as exc:
                if tmp is None or not exc.detail.startswith("cannot write"):
                    raise
                got = await node.fetch(cid, self.span, bar.transfer)  # it writes, not the node
        check_span(self.span, got)
        if self.pin and self.span is None:
            await node.pin(cid)
        dest = self.destination(cid, got, many)
        if dest is None:
            await node.read(cid, self.span, self.out.write_bytes)
            self.out.flush()
            return
        self.refuse_overwrite(dest)
        if got.written and tmp is not None and dest == early:
            try:
                os.replace(tmp, dest)
            except OSError as exc:
                raise CliError(f"cannot write {dest}: {exc.strerror}") from None
        else:
            await save(node, cid, dest, self.span, direct=self.direct)
        if self.out.json:
            self.out.data({"cid": cid, "size": got.size, "name": got.name, "path": str(dest)})
        else:
            self.out.line(str(dest))

    def destination(self, cid: Cid, got: Fetched | None, many: bool) -> Path | None:
        """Where a blob goes; None for standard output (``-o -``, or a range without
        ``-o``, which must not leave a file named after the blob)."""
        if many:
            return Path(self.output or ".") / _name(cid, got)
        if not self.output:
            return None if self.span is not None else Path(".") / _name(cid, got)
        if self.output == "-":
            return None
        dest = Path(self.output)
        return dest / _name(cid, got) if dest.is_dir() else dest

    def refuse_overwrite(self, dest: Path) -> None:
        if not self.force and dest.is_file():
            raise CliError(f"{dest} exists (--force overwrites it)")


def _name(cid: Cid, got: Fetched | None) -> str:
    name = Path((got.name if got else None) or "").name
    return name if name not in ("", ".", "..") else cid.removeprefix("blake3:")


async def save(node: NodeClient, cid: Cid, dest: Path, span: Span, *, direct: bool) -> None:
    """Write a blob to ``dest`` without ever leaving a half-written regular file.

    A regular file (or a new path) is filled under a temporary name beside it and
    renamed into place, whole chunks past the page cache when ``direct`` (config
    ``file.direct_io``, as for the store). Anything else that exists (``/dev/null``, a FIFO, a
    terminal) is written in place: renaming over it would replace the device.
    """
    if dest.is_char_device() or dest.is_fifo() or dest.is_socket():
        with open(dest, "wb") as stream:
            await node.read(cid, span, stream.write)
        return
    tmp = dest.with_name(f".{dest.name}.hearthfile-tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            write: Write = SequentialWriter(fd, direct=direct).write
            if span is None:  # kept only once whole and checked: the cheapest read
                await node.export(cid, write)
            else:
                await node.read(cid, span, write)
        finally:
            os.close(fd)
        os.replace(tmp, dest)
    except OSError as exc:
        raise CliError(f"cannot write {dest}: {exc.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)


async def cmd_pin(args: argparse.Namespace, out: Output) -> int:
    cid = cid_arg(args.cid)
    async with open_client(home_dir(args)) as node:
        state = await (node.pin(cid) if args.command == "pin" else node.unpin(cid))
    out.show(state, lambda s: f"{'pinned' if s.pinned else 'unpinned'} {s.cid}")
    return EXIT_OK


async def cmd_rm(args: argparse.Namespace, out: Output) -> int:
    async with open_client(home_dir(args)) as node:
        removed = await node.rm(cid_arg(args.cid))
    out.show(removed, lambda r: f"removed {r.cid} ({human_bytes(r.bytes_freed)} freed)")
    return EXIT_OK


async def cmd_gc(args: argparse.Namespace, out: Output) -> int:
    async with open_client(home_dir(args)) as node:
        result = await node.gc(args.all)
    out.show(
        result,
        lambda r: f"removed {len(r.removed)} blobs, {human_bytes(r.bytes_freed)} freed",
    )
    return EXIT_OK


async def cmd_verify(args: argparse.Namespace, out: Output) -> int:
    async with open_client(home_dir(args)) as node:
        r = await node.verify(args.repair)
    for line in r.corrupt + r.missing:
        print(f"bad: {line}", file=sys.stderr)
    for cid in r.affected:  # partial now: a get (or --repair) fetches what was lost
        print(f"affected blob: {cid}", file=sys.stderr)
    out.show(r, _verify_text)
    if args.repair:
        return EXIT_FAILED if r.unrepaired else EXIT_OK
    return EXIT_OK if r.clean else EXIT_FAILED


def _verify_text(r: VerifyResult) -> str:
    """Each blob's repair, if any, then the summary on the last line."""
    repairs = [f"repaired: {cid}" for cid in r.repaired]
    repairs += [f"no source: {cid}" for cid in r.no_source]
    repairs += [f"repair failed: {line}" for line in r.repair_failed]
    summary = (
        f"checked {r.chunks_checked} chunks and {r.manifests_checked} manifests: "
        f"{len(r.corrupt)} corrupt, {len(r.missing)} missing, "
        f"{r.manifests_restored} manifests restored, "
        f"{r.adopted} files the index had lost taken back"
    )
    return "\n".join([*repairs, summary])


async def cmd_status(args: argparse.Namespace, out: Output) -> int:
    async with open_client(home_dir(args)) as node:
        out.fields(await node.status())
    return EXIT_OK


async def cmd_peers(args: argparse.Namespace, out: Output) -> int:
    async with open_client(home_dir(args)) as node:
        rows = await node.peers()
    out.rows(
        rows,
        lambda r: (
            f"{r.node_id}  {r.remote:21}  {r.direction:6}  {r.trust:8}  "
            f"in={human_bytes(r.bytes_in)} out={human_bytes(r.bytes_out)}"
        ),
    )
    return EXIT_OK


async def cmd_push(args: argparse.Namespace, out: Output) -> int:
    cid = cid_arg(args.cid)
    target = node_arg(args.to)
    async with open_client(home_dir(args)) as node:
        with ProgressBar(f"push {cid[7:19]}") as bar:
            result = await node.push(cid, target, bar.transfer)
    out.show(
        result,
        lambda r: (
            f"pushed {cid} to {target}: {r.sent} chunks sent, {r.skipped} skipped (already there)"
        ),
    )
    return EXIT_OK


async def cmd_transfers(args: argparse.Namespace, out: Output) -> int:
    async with open_client(home_dir(args)) as node:
        rows = await node.transfers()
    out.rows(
        rows,
        lambda r: (
            f"{r.cid}  {human_bytes(r.done_bytes)}/{human_bytes(r.total_bytes)}  "
            f"{r.chunks_done}/{r.chunks_total} chunks  {r.sources} sources"
        ),
    )
    return EXIT_OK


async def cmd_cancel(args: argparse.Namespace, out: Output) -> int:
    async with open_client(home_dir(args)) as node:
        result = await node.cancel(cid_arg(args.cid))
    out.show(result, lambda r: f"cancelled the fetch of {r.cid}")
    return EXIT_OK


async def cmd_whohas(args: argparse.Namespace, out: Output) -> int:
    cid = cid_arg(args.cid)
    async with open_client(home_dir(args)) as node:
        rows = await node.whohas(cid)
    if out.json:
        out.data(rows)
        return EXIT_OK
    out.lines([f"{r.node_id}  {r.age_s:.0f}s{'' if r.online else '  offline'}" for r in rows])
    return EXIT_OK


async def cmd_events(args: argparse.Namespace, out: Output) -> int:
    def show(event: dict[str, object]) -> None:
        if out.json:
            out.data(event_json(event))
        else:
            fields = " ".join(
                f"{k}={v}" for k, v in event.items() if k not in ("seq", "at", "event")
            )
            at = event.get("at")
            stamp = iso_time(at) if isinstance(at, int | float) else "-"
            out.line(f"{stamp} {event.get('event')} {fields}")
        out.flush()

    async with open_client(home_dir(args)) as node:
        await node.events(args.follow, show)
    return EXIT_OK


async def cmd_stop(args: argparse.Namespace, out: Output) -> int:
    """Ask the home's daemon to stop (SIGTERM, as ``run`` handles it) and wait until
    it has let go of the home."""
    home = home_dir(args)
    info = node_home.daemon_info(home)
    if info is None:
        raise CliError(f"no daemon running for {home}")
    with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
        os.kill(info.pid, signal.SIGTERM)
    with trio.move_on_after(STOP_TIMEOUT_S):
        while node_home.daemon_info(home) is not None:
            await trio.sleep(0.05)  # polling the home's lock, with a deadline
        stopped = {"stopped": True, "pid": info.pid}
        out.show(stopped, lambda r: f"stopped the daemon (pid {info.pid})")
        return EXIT_OK
    raise CliError(f"the daemon (pid {info.pid}) did not stop within {STOP_TIMEOUT_S:.0f} s")


async def cmd_run(args: argparse.Namespace, out: Output) -> int:
    from hearthfile.config import with_overrides

    home = home_dir(args)
    config = with_overrides(
        _config(args, home), listen=args.listen, peers=args.peer or None, http=args.http
    )
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    from hearthfile import node

    try:
        await node.run_until_signalled(home, config)
    except BaseExceptionGroup as group:
        raise _run_failure(first_failure(group), config) from None
    except Exception as exc:
        raise _run_failure(exc, config) from None
    return EXIT_OK


def _run_failure(exc: BaseException, config: Config) -> BaseException:
    """Why the daemon could not run, as one line: another daemon holds the home, the
    listen host does not resolve, the port is taken, a path cannot be used."""
    from hearthfile.services.http import HttpListenError

    listen = config.node.listen
    if isinstance(exc, node_home.DaemonRunning | HttpListenError):
        return CliError(str(exc))
    if isinstance(exc, socket.gaierror):
        return CliError(f"cannot listen on {listen}: {listen.host!r} does not resolve")
    if isinstance(exc, OSError) and exc.filename is None:
        return CliError(f"cannot listen on {listen}: {exc.strerror or exc}")
    if isinstance(exc, OSError):
        return CliError(describe_os_error(exc))
    return exc


def _config(args: argparse.Namespace, home: Path) -> Config:
    from hearthfile.config import load_config

    path = getattr(args, "config", None)
    return load_config(home, Path(path) if path else None)
