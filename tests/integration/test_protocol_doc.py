"""docs/PROTOCOL.md's capability table (part C) against a running node's bus.describe,
and bus.describe filtered by the caller's trust."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import trio

from hearthfile.bus.capability import Registry, TrustLevel
from hearthfile.bus.client import open_secure_channel
from hearthfile.bus.connection import Connection
from hearthfile.home import daemon_info, load_or_create_key
from hearthfile.identity import NodeKey
from tests.integration.nodes import Daemon

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| `([a-z_.]+)` \| (\w+) \| (\d+) \| (\d+) s \| (yes|no) \|$", re.M)


async def describe(home: Path, key: NodeKey) -> list[dict[str, Any]]:
    info = daemon_info(home)
    assert info is not None
    with trio.fail_after(30):
        async with open_secure_channel(info.address, key) as channel:
            conn = Connection(channel, Registry(), lambda _: TrustLevel.STRANGER, initiator=True)
            async with trio.open_nursery() as nursery:
                await nursery.start(conn.serve)
                described: list[dict[str, Any]] = await conn.call("bus.describe")
                nursery.cancel_scope.cancel()
    return described


def test_the_capability_table_matches_bus_describe(tmp_path: Path) -> None:
    node = Daemon(tmp_path / "a").start()
    try:
        own = trio.run(describe, node.home, load_or_create_key(node.home))
        stranger = trio.run(describe, node.home, NodeKey.generate())
    finally:
        node.stop()
    rows = {m[0]: m[1:] for m in ROW.findall((ROOT / "docs" / "PROTOCOL.md").read_text())}
    assert "file.read" in rows and "bus.describe" in rows
    by_name = {d["name"]: d for d in own}
    for name, (trust, concurrent, timeout, idempotent) in rows.items():
        d = by_name[name]
        assert (d["trust_required"], d["max_concurrent"], d["timeout_seconds"]) == (
            trust,
            int(concurrent),
            float(timeout),
        ), name
        assert d["idempotent"] == (idempotent == "yes"), name
    stable = {d["name"] for d in own if d["stability"] == "stable" and "node." not in d["name"]}
    assert stable <= set(rows), stable - set(rows)
    # A stranger is shown only what a stranger may call.
    assert {d["trust_required"] for d in stranger} == {"stranger"}
    assert not any(d["name"].startswith(("node.", "file.")) for d in stranger)
    assert all(isinstance(d["timeout_seconds"], float) for d in own)
