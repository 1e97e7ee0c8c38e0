"""Introductions between real daemons: nodes joined by invite trust each other."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.integration.nodes import Daemon, wait_for
from tests.unit.test_chunker import payload

CS = 256 * 1024
FAST_GOSSIP = "gossip:\n  interval_s: 0.3\n"


def invite(node: Daemon, *flags: str) -> str:
    return node.ok("invite", *flags).splitlines()[-1]


def trusted(node: Daemon) -> dict[str, dict[str, object]]:
    return {row["node_id"]: row for row in json.loads(node.ok("--json", "trusted"))}


def test_introduced_nodes_trust_each_other_and_revocation_spreads(
    make_node: Callable[[str], Daemon], tmp_path: Path
) -> None:
    a, b, c = (make_node(name).start(config=FAST_GOSSIP) for name in "abc")
    b.ok("join", invite(a))
    c.ok("join", invite(a))
    wait_for(lambda: c.node_id in trusted(b), 30, "b to accept c through a's introduction")
    row = trusted(b)[c.node_id]
    assert (row["level"], row["source"], row["introducer"]) == ("member", "introduction", a.node_id)
    wait_for(lambda: b.node_id in trusted(c), 30, "c to accept b")
    src = tmp_path / "c.bin"
    src.write_bytes(payload(CS, 51))
    cid = c.ok("add", str(src)).split()[-1]
    b.ok("get", cid, "-o", str(tmp_path / "got.bin"))
    assert (tmp_path / "got.bin").read_bytes() == src.read_bytes()

    a.ok("untrust", c.node_id)
    wait_for(lambda: c.node_id not in trusted(b), 30, "a's revocation to reach b")
    assert "introduction_signed" in a.log()
