"""The quick commands, ``ls``, ``stat`` and ``cat`` of a held blob: they read the
home's store directly.

With a daemon running they open its store read-only (the index is SQLite in WAL
mode, so a reader sees what the daemon committed) instead of asking over the bus;
without one they open the store itself. Either way they run without trio, the bus
or a handshake, which is most of what a command costs to start. ``ls`` prints page
by page as the index yields them, so a store of 100,000 blobs is never held whole.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final

from hearthfile import home as node_home
from hearthfile.cids import Cid, CidError, parse_cid
from hearthfile.cli.errors import EXIT_OK, EXIT_USAGE, CliError
from hearthfile.cli.output import Output, human_bytes
from hearthfile.identity import IdentityError, NodeKey

if TYPE_CHECKING:  # the store and the result types load only in the commands that use them
    from hearthfile.blobs.store import BlobInfo, BlobStore
    from hearthfile.services.results import BlobEntry

#: Blobs ``ls`` reads from the index and prints at a time.
LS_PAGE: Final = 5000


def home_dir(args: argparse.Namespace) -> Path:
    text = args.home or os.environ.get("HEARTHFILE_HOME") or str(Path.home() / ".hearthfile")
    return Path(text).expanduser().absolute()


def cid_arg(text: str) -> Cid:
    try:
        return parse_cid(text)
    except CidError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


def cmd_ls(args: argparse.Namespace, out: Output) -> int:
    from hearthfile.services import ops

    with reading(home_dir(args)) as store:
        pages = ops.ls_pages(store, args.prefix or "", LS_PAGE)
        if out.json:
            out.stream_rows(([ops.entry(i) for i in page] for page in pages), ls_line)
        else:  # straight from the index's rows: 100,000 results cost a tenth of a second
            out.stream_rows(pages, ls_line)
    return EXIT_OK


def ls_line(e: BlobEntry | BlobInfo) -> str:
    pinned = "pinned" if e.pinned else "-"
    return f"{e.cid}  {human_bytes(e.size):>10}  {pinned:6}  {e.name or ''}"


def cmd_stat(args: argparse.Namespace, out: Output) -> int:
    from hearthfile.services import ops

    cid = cid_arg(args.cid)
    with reading(home_dir(args)) as store:
        out.fields(ops.stat(store, cid))
    return EXIT_OK


def cat_held(args: argparse.Namespace, out: Output) -> int | None:
    """``cat`` of a blob the daemon's store holds, straight from it without trio (as
    the node's client would read it); with no daemon, ``cat`` itself: there is
    nobody to fetch from. None: the daemon must fetch the blob (``commands.cmd_cat``)."""
    cid = cid_arg(args.cid)
    with reading(home_dir(args)) as store:
        if store.readonly and not store.has_blob(cid):
            return None
        for view in store.read_blob_stream(cid):
            out.write_bytes(view)
    out.flush()
    return EXIT_OK


@contextlib.contextmanager
def reading(home: Path) -> Iterator[BlobStore]:
    """The home's store to read: the running daemon's, read-only, else the store itself."""
    from hearthfile.blobs.store import BlobStore

    info = node_home.daemon_info(home)
    store = BlobStore(info.data_dir, readonly=True) if info else open_store(home)
    try:
        yield store
    finally:
        store.close()


def open_store(home: Path) -> BlobStore:
    """The home's store, for a command that runs without a daemon."""
    from hearthfile.blobs.store import BlobStore, StoreLocked

    if not home.is_dir():
        raise no_node(home)
    try:
        return BlobStore(home / "data")
    except StoreLocked as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot open store in {home}: {exc.strerror}") from None


def load_key(home: Path) -> NodeKey:
    try:
        return NodeKey.load(home / node_home.KEY_FILE)
    except IdentityError as exc:
        raise CliError(str(exc)) from None


def no_node(home: Path) -> CliError:
    return CliError(f"no node at {home} ('hearthfile init' creates one)")
