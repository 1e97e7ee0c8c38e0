"""The ``hearthfile`` command line (DESIGN.md section 8).

Commands, flags and exit codes are a contract: 0 ok, 1 the operation failed,
2 usage or configuration error. Every failure is one line on stderr, never a
traceback. Global options come before the command.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mimetypes
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

from hearthfile.blobs.chunker import BlobError, Manifest
from hearthfile.blobs.store import BlobInfo, BlobStore, PinnedError, StoreLocked, WriteBatch
from hearthfile.cids import Cid, CidError, parse_cid
from hearthfile.errors import HearthError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
#: Below this size a progress bar would only flicker.
PROGRESS_MIN_BYTES = 16 * 1024 * 1024


class CliError(HearthError):
    """A failure to report as one line, with its exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"hearthfile: {message} (see 'hearthfile --help')\n")


# -- context ---------------------------------------------------------------


def home_dir(args: argparse.Namespace) -> Path:
    text = args.home or os.environ.get("HEARTHFILE_HOME") or str(Path.home() / ".hearthfile")
    return Path(text).expanduser()


def data_dir(home: Path) -> Path:
    return home / "data"


@contextlib.contextmanager
def open_store(args: argparse.Namespace) -> Iterator[BlobStore]:
    home = home_dir(args)
    try:
        store = BlobStore(data_dir(home))
    except StoreLocked as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot open store in {home}: {exc.strerror}") from None
    try:
        yield store
    finally:
        store.close()


def cid_arg(text: str) -> Cid:
    try:
        return parse_cid(text)
    except CidError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


def _progress(
    total: int, label: str
) -> tuple[Callable[[int], None], contextlib.AbstractContextManager[Any]]:
    """A rich progress bar on stderr when it is a terminal and the job is large."""
    if total < PROGRESS_MIN_BYTES or not sys.stderr.isatty():
        return (lambda n: None), contextlib.nullcontext()
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bar = Progress(
        TextColumn(label),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=True,
    )
    task = bar.add_task(label, total=total)
    return (lambda n: bar.advance(task, n)), bar


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=None, sort_keys=True))


def _info_dict(info: BlobInfo) -> dict[str, object]:
    return {
        "cid": info.cid,
        "size": info.size,
        "chunks": info.chunk_count,
        "content": info.content,
        "pinned": info.pinned,
        "complete": info.complete,
        "name": info.name,
        "mime": info.mime,
        "added_at": info.added_at,
        "last_access": info.last_access,
    }


# -- commands --------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    home = home_dir(args)
    data_dir(home).mkdir(parents=True, exist_ok=True)
    with open_store(args):
        pass
    print(f"initialised {home}")
    return EXIT_OK


#: Files added in one command share a flush; this bounds what a crash can lose.
ADD_BATCH_BYTES = 256 * 1024 * 1024
ADD_BATCH_FILES = 2000


def cmd_add(args: argparse.Namespace) -> int:
    paths = [Path(p) for p in args.paths]
    for path in paths:
        if path.is_dir():
            raise CliError(f"{path} is a directory; add takes files", EXIT_USAGE)
    with open_store(args) as store:
        pending: list[str] = []
        batch = store.batch()
        try:
            for path in paths:
                pending.append(_add_file(store, batch, path, pin=args.pin).cid)
                if batch.bytes_written >= ADD_BATCH_BYTES or len(pending) >= ADD_BATCH_FILES:
                    batch.commit()
                    _print_lines(pending)
                    batch = store.batch()
        except BaseException:
            batch.abort()
            raise
        batch.commit()  # CIDs are printed only once their blobs are durable
        _print_lines(pending)
    return EXIT_OK


def _print_lines(lines: list[str]) -> None:
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    sys.stdout.flush()
    lines.clear()


def _add_file(store: BlobStore, batch: WriteBatch, path: Path, *, pin: bool) -> Manifest:
    try:
        stream: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    with stream:
        size = os.fstat(stream.fileno()).st_size
        advance, bar = _progress(size, f"add {path.name}")
        mime = mimetypes.guess_type(path.name)[0]
        with bar:
            try:
                return store.add_stream(
                    stream, name=path.name, mime=mime, pin=pin, progress=advance, batch=batch
                )
            except OSError as exc:
                raise CliError(f"cannot read {path}: {exc.strerror}") from None


def cmd_cat(args: argparse.Namespace) -> int:
    cid = cid_arg(args.cid)
    out = sys.stdout.buffer
    with open_store(args) as store:
        try:
            for view in store.read_blob_stream(cid):
                out.write(view)
            out.flush()
        except BrokenPipeError:
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
    return EXIT_OK


def cmd_get(args: argparse.Namespace) -> int:
    cid = cid_arg(args.cid)
    with open_store(args) as store:
        if not store.has_blob(cid):
            raise BlobError("not_found", cid)
        info = store.stat(cid)
        dest = Path(args.output) if args.output else Path(_safe_name(info))
        _write_atomically(dest, lambda f, advance: _copy(store, cid, f, advance), info.size)
    print(dest)
    return EXIT_OK


def _safe_name(info: BlobInfo) -> str:
    name = Path(info.name or "").name
    if not name or name in (".", ".."):
        name = info.cid.removeprefix("blake3:")
    if Path(name).exists():
        raise CliError(f"{name} already exists; choose another path with -o")
    return name


def _copy(store: BlobStore, cid: Cid, dest: BinaryIO, advance: Callable[[int], None]) -> None:
    for view in store.read_blob_stream(cid):
        dest.write(view)
        advance(len(view))


def _write_atomically(
    dest: Path, fill: Callable[[BinaryIO, Callable[[int], None]], None], size: int
) -> None:
    """Fill a temporary file beside ``dest``, then rename: no half-written output."""
    tmp = dest.with_name(f".{dest.name}.hearthfile-tmp")
    advance, bar = _progress(size, f"get {dest.name}")
    try:
        with open(tmp, "wb") as f, bar:
            fill(f, advance)
        os.replace(tmp, dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CliError(f"cannot write {dest}: {exc.strerror}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def cmd_ls(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        infos = store.list_cids(args.prefix or "")
    if args.json:
        _print_json([_info_dict(i) for i in infos])
        return EXIT_OK
    for info in infos:
        flag = "pinned" if info.pinned else "-"
        print(f"{info.cid}  {info.size:>14}  {flag:6}  {info.name or ''}")
    return EXIT_OK


def cmd_stat(args: argparse.Namespace) -> int:
    cid = cid_arg(args.cid)
    with open_store(args) as store:
        info = store.stat(cid)
    if args.json:
        _print_json(_info_dict(info))
        return EXIT_OK
    for key, value in _info_dict(info).items():
        print(f"{key:12} {value}")
    return EXIT_OK


def cmd_pin(args: argparse.Namespace) -> int:
    cid = cid_arg(args.cid)
    with open_store(args) as store:
        (store.pin if args.command == "pin" else store.unpin)(cid)
    print(f"{args.command}ned {cid}")
    return EXIT_OK


def cmd_rm(args: argparse.Namespace) -> int:
    cid = cid_arg(args.cid)
    with open_store(args) as store:
        freed = store.remove(cid)
    print(f"removed {cid} ({freed} bytes freed)")
    return EXIT_OK


def cmd_gc(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        report = store.gc(everything=args.all)
    if args.json:
        _print_json({"removed": list(report.blobs_removed), "bytes_freed": report.bytes_freed})
    else:
        print(f"removed {len(report.blobs_removed)} blobs, {report.bytes_freed} bytes freed")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        report = store.verify()
    for line in report.corrupt + report.missing:
        print(f"bad: {line}", file=sys.stderr)
    summary = (
        f"checked {report.chunks_checked} chunks and {report.manifests_checked} manifests: "
        f"{len(report.corrupt)} corrupt, {len(report.missing)} missing, "
        f"{report.manifests_restored} manifests restored, "
        f"{report.untracked_removed} untracked files removed"
    )
    if args.json:
        _print_json(
            {
                "chunks_checked": report.chunks_checked,
                "manifests_checked": report.manifests_checked,
                "corrupt": report.corrupt,
                "missing": report.missing,
                "manifests_restored": report.manifests_restored,
                "untracked_removed": report.untracked_removed,
            }
        )
    else:
        print(summary)
    return EXIT_OK if report.clean else EXIT_FAILED


# -- parser ----------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hearthfile", description="A peer-to-peer content-addressed blob node.")
    parser.add_argument(
        "--home", help="node home directory (default $HEARTHFILE_HOME or ~/.hearthfile)"
    )
    parser.add_argument("--json", action="store_true", help="print data as JSON")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    json_flag = _Parser(add_help=False)
    json_flag.add_argument("--json", action="store_true", default=argparse.SUPPRESS)

    def command(
        name: str, func: Callable[[argparse.Namespace], int], help_: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, parents=[json_flag])
        p.set_defaults(func=func)
        return p

    command("init", cmd_init, "create the node's home, key and store")
    p = command("add", cmd_add, "add files to the store; prints each blob CID")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--pin", action="store_true", help="protect the blob from GC")
    command("cat", cmd_cat, "write a blob's bytes to stdout").add_argument("cid", metavar="CID")
    p = command("get", cmd_get, "write a blob to a file")
    p.add_argument("cid", metavar="CID")
    p.add_argument("-o", "--output", metavar="PATH")
    p = command("ls", cmd_ls, "list stored blobs")
    p.add_argument("prefix", nargs="?", metavar="PREFIX")
    command("stat", cmd_stat, "show a blob's metadata").add_argument("cid", metavar="CID")
    command("pin", cmd_pin, "protect a blob from GC").add_argument("cid", metavar="CID")
    command("unpin", cmd_pin, "let GC evict a blob again").add_argument("cid", metavar="CID")
    command("rm", cmd_rm, "remove an unpinned blob now").add_argument("cid", metavar="CID")
    p = command("gc", cmd_gc, "evict least-recently-used unpinned blobs down to the target")
    p.add_argument("--all", action="store_true", help="remove every unpinned blob")
    command("verify", cmd_verify, "re-hash everything; move corrupt files aside")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CliError as exc:
        return _fail(str(exc), exc.code)
    except BlobError as exc:
        if exc.code == "not_found":
            return _fail(f"not found: {exc.detail}")
        return _fail(f"{exc.code.replace('_', ' ')}: {exc.detail}")
    except (PinnedError, StoreLocked) as exc:
        return _fail(str(exc))
    except CidError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)


def _fail(message: str, code: int = EXIT_FAILED) -> int:
    print(f"hearthfile: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
