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
    c.trust(a, "trusted")  # c already trusts a more than the invite grants
    c.ok("join", invite(a))
    assert trusted(c)[a.node_id]["level"] == "trusted"  # joining never lowers it
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


def test_ten_nodes_from_two_introducers_fetch_across_and_revocation_spreads(
    make_node: Callable[[str], Daemon], tmp_path: Path
) -> None:
    """Two introducers (the second joined the first as trusted), four members joined to
    each: no ``trust`` call anywhere, yet every node trusts all nine others and fetches
    a blob held across the introducers."""
    i1, i2 = make_node("i1").start(config=FAST_GOSSIP), make_node("i2").start(config=FAST_GOSSIP)
    i2.ok("join", invite(i1, "--level", "trusted"))
    members = [make_node(f"m{n}").start(config=FAST_GOSSIP) for n in range(8)]
    shared_1, shared_2 = invite(i1, "--uses", "4"), invite(i2, "--uses", "4")
    for n, node in enumerate(members):
        assert node.ok("join", shared_1 if n < 4 else shared_2).strip() in (i1.node_id, i2.node_id)
    nodes = [i1, i2, *members]
    for node in nodes:
        others = {n.node_id for n in nodes} - {node.node_id}
        wait_for(lambda n=node, o=others: o <= set(trusted(n)), 60, "everyone to trust everyone")
    blobs = []
    for n, node in enumerate(nodes):
        src = tmp_path / f"b{n}.bin"
        src.write_bytes(payload(CS + n, 70 + n))
        blobs.append((src, node.ok("add", str(src)).split()[-1]))
    for n, node in enumerate(nodes):
        src, cid = blobs[(n + 5) % len(nodes)]  # held on the other introducer's side
        out = tmp_path / f"got{n}.bin"
        node.ok("get", cid, "-o", str(out))
        assert out.read_bytes() == src.read_bytes()

    gone = members[5]  # joined through i2
    i2.ok("untrust", gone.node_id)
    for node in nodes:
        if node is not gone:
            wait_for(lambda n=node: gone.node_id not in trusted(n), 60, "the revocation to spread")
