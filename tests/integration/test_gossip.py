"""Signed gossip between real daemons in a line: 1 - 2 - 3 - 4 - 5."""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path

import trio

from hearthfile.gossip.messages import Records, encode_message
from hearthfile.gossip.records import sign_advert, sign_node
from hearthfile.identity import NodeKey
from tests.integration.nodes import Daemon, wait_for
from tests.integration.test_file_service import connect
from tests.unit.test_chunker import payload

CS = 256 * 1024


def start_line(make_node: Callable[[str], Daemon], n: int, *extra: NodeKey) -> list[Daemon]:
    """``n`` daemons, each bootstrapping only to the one before it; all members."""
    nodes = [make_node(f"n{i}") for i in range(1, n + 1)]
    ids = [x.node_id for x in nodes] + [str(k.node_id) for k in extra]
    trust = "".join(f"  {node_id}: member\n" for node_id in ids)
    config = f"gossip:\n  interval_s: 0.3\ntrust:\n{trust}"
    nodes[0].start(config=config)
    for before, node in itertools.pairwise(nodes):
        node.start(before, config=config)
    return nodes


def sources(node: Daemon, cid: str) -> set[str]:
    return {row["node_id"] for row in json.loads(node.ok("--json", "whohas", cid))}


def events(node: Daemon, kind: str) -> list[dict[str, object]]:
    lines = node.ok("--json", "events").splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == kind]


def test_advert_crosses_the_line_fetch_and_withdraw(
    make_node: Callable[[str], Daemon], tmp_path: Path
) -> None:
    n1, _, _, _, n5 = start_line(make_node, 5)
    src = tmp_path / "far.bin"
    src.write_bytes(payload(3 * CS + 9, 21))
    cid = n1.ok("add", "--no-pin", str(src)).split()[-1]
    wait_for(lambda: n1.node_id in sources(n5, cid), 60, "node 5 to learn node 1 holds it")
    n5.ok("get", cid, "-o", str(tmp_path / "got.bin"))
    assert (tmp_path / "got.bin").read_bytes() == src.read_bytes()
    assert any(cid in e["added"] for e in events(n5, "file.cid.advertised"))  # type: ignore[operator]
    n1.ok("gc", "--all")
    wait_for(lambda: n1.node_id not in sources(n5, cid), 60, "node 5 to learn it was withdrawn")


def test_restarted_node_catches_up(make_node: Callable[[str], Daemon], tmp_path: Path) -> None:
    n1, n2, n3 = start_line(make_node, 3)
    wait_for(lambda: n3.connected_to(n2), 30, "the line to form")
    assert n3.stop() == 0
    src = tmp_path / "while-away.bin"
    src.write_bytes(payload(CS, 22))
    cid = n1.ok("add", str(src)).split()[-1]
    wait_for(lambda: n1.node_id in sources(n2, cid), 60, "node 2 to learn of the blob")
    n3.start(n2)
    wait_for(lambda: n1.node_id in sources(n3, cid), 60, "the restarted node to catch up")


async def test_forged_record_rejected_and_counted(make_node: Callable[[str], Daemon]) -> None:
    key = NodeKey.generate()
    (n1,) = start_line(make_node, 1, key)
    now_ms = int(time.time() * 1000)
    record = sign_advert(
        key.sign,
        key.node_id,
        seq=now_ms,
        prev=0,
        timestamp_ms=now_ms,
        addresses=["127.0.0.1:1"],
        added=["blake3:" + "ab" * 32],
        full=True,
    )
    heartbeat = sign_node(
        key.sign,
        key.node_id,
        seq=now_ms,
        timestamp_ms=now_ms,
        addresses=["127.0.0.1:1"],
        snapshot_seq=now_ms,
    )
    flipped = bytearray(record.signature)
    flipped[0] ^= 0x01
    forged = dataclasses.replace(record, signature=bytes(flipped))
    with trio.fail_after(30):
        async with connect(n1, key) as conn:
            message = encode_message(Records((heartbeat, forged), {}))
            await conn.call("gossip.exchange", message)
    rejected = events(n1, "gossip.record_rejected")
    assert rejected and "signature" in str(rejected[0]["reason"])
    assert sources(n1, "blake3:" + "ab" * 32) == set()
