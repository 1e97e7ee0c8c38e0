"""The trust commands: trust, untrust, trusted, invite, join (DESIGN.md sections 8
and 11). With a daemon running they go to it, so a change applies to its live
connections at once; without one, trust/untrust/trusted edit the home's book."""

from __future__ import annotations

import argparse
import time

from hearthfile.cli.client import open_client
from hearthfile.cli.commands import node_arg
from hearthfile.cli.errors import EXIT_OK, EXIT_USAGE, CliError
from hearthfile.cli.local import home_dir
from hearthfile.cli.output import Output, iso_time
from hearthfile.trust.invites import MAX_USES, TokenError, decode_token, parse_duration


async def cmd_trust(args: argparse.Namespace, out: Output) -> int:
    target = node_arg(args.node_id)  # the book refuses the node's own id
    async with open_client(home_dir(args)) as node:
        change = await node.trust(target, args.level)
    out.show(change, lambda c: f"trust {c.node_id} {c.level}")
    return EXIT_OK


async def cmd_untrust(args: argparse.Namespace, out: Output) -> int:
    target = node_arg(args.node_id)
    async with open_client(home_dir(args)) as node:
        change = await node.untrust(target)
    out.show(change, lambda c: f"untrust {c.node_id} (now {c.level})")
    return EXIT_OK


async def cmd_trusted(args: argparse.Namespace, out: Output) -> int:
    async with open_client(home_dir(args)) as node:
        rows = await node.trusted()
    out.rows(
        rows,
        lambda r: (
            f"{r.node_id}  {r.level:8}  {iso_time(r.since) if r.since else '-'}  "
            f"{f'introduced by {r.introducer}' if r.introducer else r.source}"
        ),
    )
    return EXIT_OK


async def cmd_invite(args: argparse.Namespace, out: Output) -> int:
    try:
        ttl_s = parse_duration(args.ttl)
    except ValueError as exc:
        raise CliError(f"--ttl: {exc}", EXIT_USAGE) from None
    if not 1 <= args.uses <= MAX_USES:
        raise CliError(f"--uses must be 1..{MAX_USES}", EXIT_USAGE)
    async with open_client(home_dir(args)) as node:
        invite = await node.invite(args.level, args.uses, ttl_s)
    if out.json:
        out.data(invite)
        return EXIT_OK
    uses = "1 use" if invite.uses == 1 else f"{invite.uses} uses"
    out.line(f"invite: level {invite.level}, {uses}, expires {iso_time(invite.expires_at)}")
    out.line("on the new machine, with its daemon running: hearthfile join TOKEN")
    out.line(invite.token)
    return EXIT_OK


async def cmd_join(args: argparse.Namespace, out: Output) -> int:
    try:
        token = decode_token(args.token)
    except TokenError as exc:
        raise CliError(str(exc)) from None
    if time.time() > token.expires_at:
        raise CliError("invite expired")
    async with open_client(home_dir(args)) as node:
        joined = await node.join(args.token.strip())
    out.show(joined, lambda j: j.inviter)
    return EXIT_OK
