"""The download commands: download, downloads (DESIGN.md sections 8 and 12).

They need the daemon (it does the fetching and keeps the records). ``download``
follows its download to the end with a progress bar: the daemon answers its
``wait`` calls as the download ends (or with the progress so far, every
``PROGRESS_INTERVAL_S``); ``--detach`` leaves it running.
"""

from __future__ import annotations

import argparse
from typing import Final

from hearthfile.cli.client import NodeClient, open_client
from hearthfile.cli.errors import EXIT_OK, EXIT_USAGE, CliError
from hearthfile.cli.local import home_dir
from hearthfile.cli.output import Output, ProgressBar
from hearthfile.services.downloads import core
from hearthfile.services.results import DownloadRecord

#: How often the progress bar of ``download`` moves while it follows one.
PROGRESS_INTERVAL_S: Final = 0.25


async def cmd_download(args: argparse.Namespace, out: Output) -> int:
    try:
        core.check_url(args.url)
        core.check_expect(args.expect)
        core.check_name(args.name)
    except core.DownloadError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    request = {"url": args.url, "name": args.name, "expect": args.expect, "refresh": args.refresh}
    async with open_client(home_dir(args)) as node:
        rec = await node.download(request)
        if not args.detach:
            rec = await _follow(node, rec)
    out.show(rec, lambda r: r.id if args.detach else str(r.cid))
    return EXIT_OK


async def _follow(node: NodeClient, rec: DownloadRecord) -> DownloadRecord:
    """Follow the record until it ends; a failed or paused download is exit 1."""
    with ProgressBar(f"download {rec.name[:24]}") as bar:
        while rec.status in ("Pending", "InProgress"):
            if rec.size:
                bar.update(rec.downloaded_bytes, rec.size)
            rec = await node.download_wait(rec.id, PROGRESS_INTERVAL_S)
    if rec.status == "Failed":
        raise CliError(f"download {rec.id} failed: {rec.error}")
    if rec.status == "Paused":
        raise CliError(f"download {rec.id} was paused (hearthfile downloads resume {rec.id})")
    return rec


async def cmd_downloads(args: argparse.Namespace, out: Output) -> int:
    action = args.action or "list"
    if action == "list" and args.id is not None:
        raise CliError("downloads list takes no id", EXIT_USAGE)
    if action != "list" and args.id is None:
        raise CliError(f"downloads {action} needs a download id", EXIT_USAGE)
    async with open_client(home_dir(args)) as node:
        if action == "list":
            rows = await node.downloads()
            out.rows(rows, _line)
            return EXIT_OK
        if action == "remove":
            removed = await node.download_remove(args.id)
            out.show(removed, lambda r: f"removed {r.id}")
            return EXIT_OK
        rec = await node.download_op(action, args.id)
    if action == "show":
        out.fields(rec)
    else:
        out.show(rec, _line)
    return EXIT_OK


def _line(r: DownloadRecord) -> str:
    size = "?" if r.size is None else str(r.size)
    tail = r.cid or r.error or r.url
    return f"{r.id}  {r.status:10}  {r.progress:6.2f}%  {size:>12}  {r.name}  {tail}"
