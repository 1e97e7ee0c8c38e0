"""Joining by invite between real daemons: invite on one node, join TOKEN on another."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from hearthfile.errors import ServiceError
from hearthfile.identity import NodeKey
from hearthfile.trust.invites import decode_token, encode_token
from tests.integration.nodes import Daemon, wait_for
from tests.integration.test_file_service import connect
from tests.unit.test_chunker import payload

CS = 256 * 1024
FAST_GOSSIP = "gossip:\n  interval_s: 0.3\n"


def invite(node: Daemon, *flags: str) -> str:
    out = node.ok("invite", *flags).splitlines()
    return out[-1]


def trusted(node: Daemon) -> dict[str, dict[str, object]]:
    return {row["node_id"]: row for row in json.loads(node.ok("--json", "trusted"))}


def refused(node: Daemon, token: str, why: str) -> None:
    result = node.cli("join", token)
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and why in result.stderr, result.stderr


def test_invite_join_fetch_and_refusals(make_node: Callable[[str], Daemon], tmp_path: Path) -> None:
    a, b, c = (make_node(name).start(config=FAST_GOSSIP) for name in "abc")
    token = invite(a, "--level", "trusted")
    assert " " not in token and len(token) < 200
    assert b.ok("join", token).strip() == a.node_id
    assert trusted(a)[b.node_id]["level"] == "trusted"
    assert trusted(a)[b.node_id]["source"] == "invite"
    assert trusted(b)[a.node_id]["source"] == "joined"
    assert token not in a.log() and token not in b.log()
    assert token not in a.ok("--json", "events")

    src = tmp_path / "a.bin"
    src.write_bytes(payload(CS + 3, 41))
    cid = a.ok("add", str(src)).split()[-1]
    wait_for(
        lambda: a.node_id in {r["node_id"] for r in json.loads(b.ok("--json", "whohas", cid))},
        30,
        "b to learn what a holds",
    )
    b.ok("get", cid, "-o", str(tmp_path / "got.bin"))
    assert (tmp_path / "got.bin").read_bytes() == src.read_bytes()

    refused(c, token, "used")  # single use
    at = len(token) - 7
    tampered = token[:at] + ("a" if token[at] != "a" else "b") + token[at + 1 :]
    refused(c, tampered, "damaged")
    wrong = encode_token(
        dataclasses.replace(decode_token(invite(a)), addresses=(f"127.0.0.1:{b.port}",))
    )
    d = make_node("d").start()  # never connected to a (c is, since its refused join)
    refused(d, wrong, "cannot reach inviter")  # b answers there, but is not the inviter
    short = invite(a, "--ttl", "1s")
    expires = decode_token(short).expires_at
    wait_for(lambda: time.time() > expires + 1, 10, "the invite to expire")
    refused(c, short, "expired")
    refused(a, invite(a), "made by this node")
    assert c.node_id not in trusted(a)
    assert a.cli("invite", "--ttl", "soon").returncode == 2
    assert b.stop() == 0
    b.start(config=FAST_GOSSIP)  # no --peer: the join is remembered
    wait_for(lambda: b.connected_to(a), 30, "b to reconnect to its inviter after a restart")


async def test_a_replayed_join_message_grants_nothing(make_node: Callable[[str], Daemon]) -> None:
    a = make_node("a").start()
    token = decode_token(invite(a, "--uses", "3"))
    joiner, stranger = NodeKey.generate(), NodeKey.generate()
    captured = {"id": token.invite_id, "proof": token.proof(joiner.node_id)}
    with trio.fail_after(60):
        async with connect(a, stranger) as conn:
            with pytest.raises(ServiceError) as info:
                await conn.call("trust.join", captured)
            assert info.value.code == "unauthorized"
            with pytest.raises(ServiceError) as info:
                await conn.call("file.list", {"prefix": "", "limit": 1})
            assert info.value.code == "unauthorized"
            for _ in range(10):  # guessing is rate-limited
                with pytest.raises(ServiceError) as info:
                    await conn.call("trust.join", {"id": b"x" * 16, "proof": b"y" * 32})
                if info.value.code == "busy":
                    break
            assert info.value.code == "busy"
        async with connect(a, joiner) as conn:  # the real joiner still can
            assert (await conn.call("trust.join", captured))["level"] == "member"
    assert str(stranger.node_id) not in trusted(a)
    assert trusted(a)[str(joiner.node_id)]["level"] == "member"
