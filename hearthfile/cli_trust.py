"""The trust commands of the command line: trust, untrust, trusted, invite, join
(DESIGN.md sections 8 and 11).

With a daemon running they go to it (``node.trust`` ...), so the change applies to
its live connections at once; without one they edit the home's trust book directly.
Kept apart from hearthfile/cli.py, which registers them in its parser.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hearthfile import home as node_home
from hearthfile.cli import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    _load_key,
    _print_json,
    home_dir,
    open_node,
)
from hearthfile.config import load_config
from hearthfile.identity import NodeId
from hearthfile.trust.book import TrustBook, TrustError
from hearthfile.trust.invites import MAX_USES, TokenError, decode_token, parse_duration
from hearthfile.trust.levels import TrustLevel
from hearthfile.trust.storage import open_book


def _node_arg(text: str) -> NodeId:
    try:
        return NodeId.parse(text)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


def _offline_book(args: argparse.Namespace, home: Path) -> TrustBook:
    config = load_config(home)
    try:
        return open_book(
            home,
            _load_key(home).node_id,
            config.trust,
            open_membership=config.open_membership,
        )
    except TrustError as exc:
        raise CliError(str(exc)) from None


async def _daemon_call(args: argparse.Namespace, op: str, call_args: dict[str, Any]) -> Any:
    async with open_node(args) as node:
        return await node.call(op, call_args)


async def cmd_trust(args: argparse.Namespace) -> int:
    node = _node_arg(args.node_id)
    home = home_dir(args)
    if node_home.daemon_info(home) is None:
        try:
            level = TrustLevel.parse_grantable(args.level)
            _offline_book(args, home).grant(node, level, now=time.time())
        except TrustError as exc:
            raise CliError(str(exc)) from None
    else:
        await _daemon_call(args, "trust", {"node_id": str(node), "level": args.level})
    if args.json:
        _print_json({"node_id": str(node), "level": args.level})
    else:
        print(f"trust {node} {args.level}")
    return EXIT_OK


async def cmd_untrust(args: argparse.Namespace) -> int:
    node = _node_arg(args.node_id)
    home = home_dir(args)
    if node_home.daemon_info(home) is None:
        try:
            level = _offline_book(args, home).revoke(node).after.label
        except TrustError as exc:
            raise CliError(str(exc)) from None
    else:
        level = (await _daemon_call(args, "untrust", {"node_id": str(node)}))["level"]
    if args.json:
        _print_json({"node_id": str(node), "level": level})
    else:
        print(f"untrust {node} (now {level})")
    return EXIT_OK


async def cmd_trusted(args: argparse.Namespace) -> int:
    home = home_dir(args)
    if node_home.daemon_info(home) is None:
        from hearthfile.services.trust import entry_row

        rows = [entry_row(e) for e in _offline_book(args, home).entries()]
    else:
        rows = await _daemon_call(args, "trusted", {})
    if args.json:
        _print_json(rows)
        return EXIT_OK
    for r in rows:
        via = f"introduced by {r['introducer']}" if r["introducer"] else r["source"]
        since = _when(r["since"])
        print(f"{r['node_id']}  {r['level']:8}  {since}  {via}")
    return EXIT_OK


async def cmd_invite(args: argparse.Namespace) -> int:
    try:
        ttl_s = parse_duration(args.ttl)
    except ValueError as exc:
        raise CliError(f"--ttl: {exc}", EXIT_USAGE) from None
    if not 1 <= args.uses <= MAX_USES:
        raise CliError(f"--uses must be 1..{MAX_USES}", EXIT_USAGE)
    home = home_dir(args)
    if node_home.daemon_info(home) is None:
        raise CliError(f"no daemon running for {home}: start it with 'hearthfile run'")
    result = await _daemon_call(
        args, "invite", {"level": args.level, "uses": args.uses, "ttl_s": ttl_s}
    )
    if args.json:
        _print_json(result)
        return EXIT_OK
    uses = "1 use" if result["uses"] == 1 else f"{result['uses']} uses"
    print(f"invite: level {result['level']}, {uses}, expires {_when(result['expires_at'])} UTC")
    print("on the new machine, with its daemon running: hearthfile join TOKEN")
    print(result["token"])
    return EXIT_OK


async def cmd_join(args: argparse.Namespace) -> int:
    try:
        token = decode_token(args.token)
    except TokenError as exc:
        raise CliError(str(exc)) from None
    if time.time() > token.expires_at:
        raise CliError("invite expired")
    home = home_dir(args)
    if node_home.daemon_info(home) is None:
        raise CliError(f"no daemon running for {home}: start it with 'hearthfile run'")
    result = await _daemon_call(args, "join", {"token": args.token.strip()})
    if args.json:
        _print_json(result)
    else:
        print(result["inviter"])
    return EXIT_OK


def _when(stamp: float) -> str:
    if not stamp:
        return "-"
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M")


def add_commands(command: Any) -> None:
    """Register the trust commands with cli.build_parser's ``command`` helper."""
    p = command("trust", cmd_trust, "set a peer's trust level (applies to live connections)")
    p.add_argument("node_id", metavar="NODEID")
    p.add_argument("--level", required=True, choices=["member", "trusted"])
    p = command("untrust", cmd_untrust, "take back a peer's trust (applies at once)")
    p.add_argument("node_id", metavar="NODEID")
    command("trusted", cmd_trusted, "who this node trusts, at which level, and why")
    p = command("invite", cmd_invite, "make a one-line token another node joins with")
    p.add_argument("--level", default="member", choices=["member", "trusted"])
    p.add_argument("--uses", type=int, default=1, metavar="N", help="joins allowed (default 1)")
    p.add_argument("--ttl", default="1h", metavar="DURATION", help="e.g. 30m, 1h, 7d (default 1h)")
    p = command("join", cmd_join, "join the network of the node that made TOKEN")
    p.add_argument("token", metavar="TOKEN")
