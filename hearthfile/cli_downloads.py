"""The download commands of the command line: download, downloads (DESIGN.md 8, 12).

They need the daemon (it does the fetching and keeps the records) and reach it
over the bus (``node.download*``). ``download`` follows its download to the end
with a progress bar, polling the record; ``--detach`` leaves it running.
Kept apart from hearthfile/cli.py, which registers them in its parser.
"""

from __future__ import annotations

import argparse
from typing import Any, Final

import trio

from hearthfile.cli import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    ProgressBar,
    RemoteNode,
    _print_json,
    open_node,
)
from hearthfile.services.downloads import core

#: How often ``download`` asks for its record while it follows one.
POLL_INTERVAL_S: Final = 0.25
ACTIONS: Final = ("list", "show", "pause", "resume", "remove")


async def _call(args: argparse.Namespace, op: str, call_args: dict[str, Any]) -> Any:
    async with open_node(args) as node:
        if not isinstance(node, RemoteNode):
            raise CliError("no daemon running: start one with 'hearthfile run'")
        return await node.call(op, call_args)


async def cmd_download(args: argparse.Namespace) -> int:
    try:
        core.check_url(args.url)
        core.check_expect(args.expect)
        core.check_name(args.name)
    except core.DownloadError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    request = {"url": args.url, "name": args.name, "expect": args.expect, "refresh": args.refresh}
    async with open_node(args) as node:
        if not isinstance(node, RemoteNode):
            raise CliError("no daemon running: start one with 'hearthfile run'")
        rec = await node.call("download", request)
        if not args.detach:
            rec = await _follow(node, rec)
    if args.json:
        _print_json(rec)
    elif args.detach:
        print(rec["id"])
    else:
        print(rec["cid"])
    return EXIT_OK


async def _follow(node: RemoteNode, rec: dict[str, Any]) -> dict[str, Any]:
    """Poll the record until it ends; a failed or paused download is exit 1."""
    with ProgressBar(f"download {rec['name'][:24]}") as bar:
        while rec["status"] in ("Pending", "InProgress"):
            if rec["size"]:
                bar.update(rec["downloaded_bytes"], rec["size"])
            await trio.sleep(POLL_INTERVAL_S)  # polling the daemon's record, not a wait
            rec = await node.call("download.show", {"id": rec["id"]})
    if rec["status"] == "Failed":
        raise CliError(f"download {rec['id']} failed: {rec['error']}")
    if rec["status"] == "Paused":
        raise CliError(f"download {rec['id']} was paused (hearthfile downloads resume {rec['id']})")
    return rec


async def cmd_downloads(args: argparse.Namespace) -> int:
    action = args.action or "list"
    if action == "list":
        if args.id is not None:
            raise CliError("downloads list takes no id", EXIT_USAGE)
        rows = await _call(args, "downloads", {})
        if args.json:
            _print_json(rows)
        for r in [] if args.json else rows:
            print(_line(r))
        return EXIT_OK
    if args.id is None:
        raise CliError(f"downloads {action} needs a download id", EXIT_USAGE)
    op = "download.show" if action == "show" else f"download.{action}"
    result = await _call(args, op, {"id": args.id})
    if args.json:
        _print_json(result)
    elif action == "remove":
        print(f"removed {args.id}")
    elif action == "show":
        for key, value in result.items():
            print(f"{key:17} {'' if value is None else value}")
    else:
        print(_line(result))
    return EXIT_OK


def _line(r: dict[str, Any]) -> str:
    size = "?" if r["size"] is None else str(r["size"])
    tail = r["cid"] or r["error"] or r["url"]
    return f"{r['id']}  {r['status']:10}  {r['progress']:6.2f}%  {size:>12}  {r['name']}  {tail}"


def add_commands(command: Any) -> None:
    """Register the download commands with cli.build_parser's ``command`` helper."""
    p = command("download", cmd_download, "cache a URL into the store; prints the blob CID")
    p.add_argument("url", metavar="URL")
    p.add_argument("--name", help="the blob's name (default: from the URL)")
    p.add_argument("--expect", metavar="blake3:HEX|sha256:HEX", help="the whole file's hash")
    p.add_argument("--detach", action="store_true", help="print the download id and return")
    p.add_argument("--refresh", action="store_true", help="go to the origin even if cached")
    p = command("downloads", cmd_downloads, "list, show, pause, resume or remove downloads")
    p.add_argument("action", nargs="?", choices=ACTIONS, metavar="list|show|pause|resume|remove")
    p.add_argument("id", nargs="?", metavar="ID")
