"""The argument parser: commands, flags and their help (DESIGN.md section 8)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from typing import NoReturn

from hearthfile.cli import commands as c
from hearthfile.cli import downloads, trust
from hearthfile.cli.errors import EXIT_USAGE
from hearthfile.cli.output import Output

Command = Callable[[argparse.Namespace, Output], Awaitable[int]]


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

    def command(name: str, func: Command, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, parents=[json_flag])
        p.set_defaults(func=func)
        return p

    def with_cid(name: str, func: Command, help_: str) -> argparse.ArgumentParser:
        p = command(name, func, help_)
        p.add_argument("cid", metavar="CID")
        return p

    command("init", c.cmd_init, "create the node's home, key and store")
    command("id", c.cmd_id, "print this node's NodeID")
    command("status", c.cmd_status, "the running daemon's state")
    command("peers", c.cmd_peers, "connected peers")
    command("stop", c.cmd_stop, "stop the running daemon")
    p = command("run", c.cmd_run, "run the daemon")
    p.add_argument("--listen", metavar="HOST:PORT")
    p.add_argument("--http", metavar="HOST:PORT|off", help="HTTP gateway (default 127.0.0.1:7780)")
    p.add_argument("--peer", action="append", metavar="HOST:PORT", help="bootstrap peer (repeat)")
    p.add_argument("--config", metavar="FILE", help="config file (default <home>/config.yaml)")
    p = command("add", c.cmd_add, "add files (a directory: every file under it); prints each CID")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--no-pin", action="store_true", help="let GC evict what is added")
    p.add_argument("--pin", action="store_true", help=argparse.SUPPRESS)  # the default
    with_cid("cat", c.cmd_cat, "write a blob's bytes to stdout")
    p = command("get", c.cmd_get, "fetch blobs (from peers if not local) and write them to files")
    p.add_argument("cids", nargs="+", metavar="CID")
    p.add_argument("-o", "--output", metavar="PATH", help="file (one CID) or directory (many)")
    p.add_argument("--range", metavar="START-END", help="only bytes START..END, inclusive")
    p.add_argument("--pin", action="store_true", help="protect the fetched blob from GC")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p = command("ls", c.cmd_ls, "list stored blobs")
    p.add_argument("prefix", nargs="?", metavar="PREFIX")
    with_cid("stat", c.cmd_stat, "show a blob's metadata")
    with_cid("pin", c.cmd_pin, "protect a blob from GC")
    with_cid("unpin", c.cmd_pin, "let GC evict a blob again")
    with_cid("rm", c.cmd_rm, "remove an unpinned blob now")
    p = command("gc", c.cmd_gc, "evict least-recently-used unpinned blobs down to the target")
    p.add_argument("--all", action="store_true", help="remove every unpinned blob")
    p = command("verify", c.cmd_verify, "re-hash everything; move corrupt files aside")
    p.add_argument(
        "--repair", action="store_true", help="then fetch the damaged blobs again from peers"
    )
    p = with_cid("push", c.cmd_push, "send a blob to a peer that trusts this node")
    p.add_argument("--to", required=True, metavar="NODEID")
    command("transfers", c.cmd_transfers, "fetches under way")
    with_cid("whohas", c.cmd_whohas, "known sources of a blob, with age")
    p = command("events", c.cmd_events, "the node's event stream (adverts, peers, transfers)")
    p.add_argument("--follow", action="store_true", help="keep printing new events")
    with_cid("cancel", c.cmd_cancel, "stop a fetch under way")
    trust.add_commands(command)
    downloads.add_commands(command)
    return parser
