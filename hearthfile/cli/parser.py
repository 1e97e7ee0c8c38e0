"""The argument parser: commands, flags and their help (DESIGN.md section 8).

Each command's function is named here and loaded only when it runs (``Lazy``), so a
quick local command (``ls``, ``stat``) starts without importing trio, the bus or
the services it does not use.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, NoReturn

from hearthfile.cli.errors import EXIT_USAGE

if TYPE_CHECKING:
    from hearthfile.cli.output import Output

#: A command: async (run under trio) or, for the quick local ones, plain.
Command = Callable[["argparse.Namespace", "Output"], "Awaitable[int] | int"]
#: A command's quick path: its exit code, or None to run the command itself.
QuickCommand = Callable[["argparse.Namespace", "Output"], "int | None"]
#: ``downloads ACTION`` choices.
DOWNLOAD_ACTIONS: Final = ("list", "show", "pause", "resume", "remove")


class Lazy:
    """``module:function`` of hearthfile.cli, imported when the command runs; with
    ``quick``, another tried first: a plain function that needs no trio (``cat`` of a
    blob held here), and answers None when the command needs the node after all."""

    def __init__(self, ref: str, quick: str | None = None) -> None:
        self.ref, self.quick = ref, quick

    def load(self) -> Command:
        func: Command = _function(self.ref)
        return func

    def load_quick(self) -> QuickCommand | None:
        if self.quick is None:
            return None
        func: QuickCommand = _function(self.quick)
        return func


def _function(ref: str) -> Any:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(f"hearthfile.cli.{module}"), name)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        text = f"{message} (see 'hearthfile --help')"
        if "--json" in sys.argv[1:]:
            fields = {"error": text, "exit_code": EXIT_USAGE, "code": "usage"}
            self.exit(EXIT_USAGE, json.dumps(fields, sort_keys=True) + "\n")
        self.exit(EXIT_USAGE, f"hearthfile: {text}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hearthfile", description="A peer-to-peer content-addressed blob node.")
    parser.add_argument("--home", help="node home (default $HEARTHFILE_HOME or ~/.hearthfile)")
    parser.add_argument("--json", action="store_true", help="print data (and errors) as JSON")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    json_flag = _Parser(add_help=False)
    json_flag.add_argument("--json", action="store_true", default=argparse.SUPPRESS)

    def command(name: str, ref: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, parents=[json_flag])
        p.set_defaults(func=Lazy(ref if ":" in ref else f"commands:{ref}"))
        return p

    def with_cid(name: str, ref: str, help_: str) -> argparse.ArgumentParser:
        p = command(name, ref, help_)
        p.add_argument("cid", metavar="CID")
        return p

    command("init", "cmd_init", "create the node's home, key and store")
    command("id", "cmd_id", "print this node's NodeID")
    command("status", "cmd_status", "the running daemon's state")
    command("peers", "cmd_peers", "connected peers")
    command("stop", "cmd_stop", "stop the running daemon")
    p = command("run", "cmd_run", "run the daemon")
    p.add_argument("--listen", metavar="HOST:PORT")
    p.add_argument("--http", metavar="HOST:PORT|off", help="HTTP gateway (default 127.0.0.1:7780)")
    p.add_argument("--peer", action="append", metavar="HOST:PORT", help="bootstrap peer (repeat)")
    p.add_argument("--config", metavar="FILE", help="config file (default <home>/config.yaml)")
    _blob_commands(command, with_cid)
    p = with_cid("push", "cmd_push", "send a blob to a peer that trusts this node")
    p.add_argument("--to", required=True, metavar="NODEID")
    command("transfers", "cmd_transfers", "fetches under way")
    with_cid("whohas", "cmd_whohas", "known sources of a blob, with age")
    p = command("events", "cmd_events", "the node's event stream (adverts, peers, transfers)")
    p.add_argument("--follow", action="store_true", help="keep printing new events")
    with_cid("cancel", "cmd_cancel", "stop a fetch under way")
    _trust_commands(command)
    _download_commands(command)
    return parser


def _blob_commands(
    command: Callable[[str, str, str], argparse.ArgumentParser],
    with_cid: Callable[[str, str, str], argparse.ArgumentParser],
) -> None:
    """The commands on blobs held here: add, cat, get, ls, stat, pin, unpin, rm, gc, verify."""
    p = command("add", "cmd_add", "add files (a directory: every file under it); prints each CID")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--no-pin", action="store_true", help="let GC evict what is added")
    p.add_argument("--pin", action="store_true", help=argparse.SUPPRESS)  # the default
    p = with_cid("cat", "cmd_cat", "write a blob's bytes to stdout")
    p.set_defaults(func=Lazy("commands:cmd_cat", quick="local:cat_held"))
    p = command("get", "cmd_get", "fetch blobs (from peers if not local) and write them to files")
    p.add_argument("cids", nargs="+", metavar="CID")
    p.add_argument("-o", "--output", metavar="PATH", help="file (one CID) or directory (many)")
    p.add_argument("--range", metavar="START-END", help="only bytes START..END, inclusive")
    p.add_argument("--pin", action="store_true", help="protect the fetched blob from GC")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p = command("ls", "local:cmd_ls", "list stored blobs")
    p.add_argument("prefix", nargs="?", metavar="PREFIX")
    with_cid("stat", "local:cmd_stat", "show a blob's metadata")
    with_cid("pin", "cmd_pin", "protect a blob from GC")
    with_cid("unpin", "cmd_pin", "let GC evict a blob again")
    with_cid("rm", "cmd_rm", "remove an unpinned blob now")
    p = command("gc", "cmd_gc", "evict least-recently-used unpinned blobs down to the target")
    p.add_argument("--all", action="store_true", help="remove every unpinned blob")
    p = command("verify", "cmd_verify", "re-hash everything; move corrupt files aside")
    p.add_argument(
        "--repair", action="store_true", help="then fetch the damaged blobs again from peers"
    )


def _trust_commands(command: Callable[[str, str, str], argparse.ArgumentParser]) -> None:
    p = command(
        "trust", "trust:cmd_trust", "set a peer's trust level (applies to live connections)"
    )
    p.add_argument("node_id", metavar="NODEID")
    p.add_argument("--level", required=True, choices=["member", "trusted"])
    p = command("untrust", "trust:cmd_untrust", "take back a peer's trust (applies at once)")
    p.add_argument("node_id", metavar="NODEID")
    command("trusted", "trust:cmd_trusted", "who this node trusts, at which level, and why")
    p = command("invite", "trust:cmd_invite", "make a one-line token another node joins with")
    p.add_argument("--level", default="member", choices=["member", "trusted"])
    p.add_argument("--uses", type=int, default=1, metavar="N", help="joins allowed (default 1)")
    p.add_argument("--ttl", default="1h", metavar="DURATION", help="e.g. 30m, 1h, 7d (default 1h)")
    p = command("join", "trust:cmd_join", "join the network of the node that made TOKEN")
    p.add_argument("token", metavar="TOKEN")


def _download_commands(command: Callable[[str, str, str], argparse.ArgumentParser]) -> None:
    p = command(
        "download", "downloads:cmd_download", "cache a URL into the store; prints the blob CID"
    )
    p.add_argument("url", metavar="URL")
    p.add_argument("--name", help="the blob's name (default: from the URL)")
    p.add_argument("--expect", metavar="blake3:HEX|sha256:HEX", help="the whole file's hash")
    p.add_argument("--detach", action="store_true", help="print the download id and return")
    p.add_argument("--refresh", action="store_true", help="go to the origin even if cached")
    p = command(
        "downloads", "downloads:cmd_downloads", "list, show, pause, resume or remove downloads"
    )
    p.add_argument(
        "action", nargs="?", choices=DOWNLOAD_ACTIONS, metavar="list|show|pause|resume|remove"
    )
    p.add_argument("id", nargs="?", metavar="ID")
