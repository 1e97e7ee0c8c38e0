"""Live trust between real daemons: trust, untrust and trusted while running."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

from tests.integration.nodes import Daemon, Proxy, wait_for
from tests.integration.test_transfer import MIB, knows, proxies, shares, write_blob
from tests.unit.test_chunker import payload

CS = 256 * 1024
FAST_GOSSIP = "gossip:\n  interval_s: 0.3\n"
__all__ = ["proxies"]  # a fixture, used by name


def sources(node: Daemon, cid: str) -> set[str]:
    return {row["node_id"] for row in json.loads(node.ok("--json", "whohas", cid))}


def trusted(node: Daemon) -> dict[str, dict[str, object]]:
    return {row["node_id"]: row for row in json.loads(node.ok("--json", "trusted"))}


def test_line_trusted_after_start_learns_the_blob(
    make_node: Callable[[str], Daemon], tmp_path: Path
) -> None:
    """The issue's scenario: five nodes in a line, trusted only once they all run."""
    nodes = [make_node(f"n{i}") for i in range(1, 6)]
    nodes[0].start(config=FAST_GOSSIP)
    for before, node in itertools.pairwise(nodes):
        node.start(before, config=FAST_GOSSIP)
    for before, node in itertools.pairwise(nodes):
        wait_for(lambda n=node, b=before: n.connected_to(b), 30, "the line to form")
    for a, b in itertools.permutations(nodes, 2):
        a.trust(b, "member")
    src = tmp_path / "line.bin"
    src.write_bytes(payload(CS + 5, 31))
    cid = nodes[0].ok("add", str(src)).split()[-1]
    first = nodes[0].node_id
    for node in nodes[1:]:
        wait_for(lambda n=node: first in sources(n, cid), 60, "the advert to spread")
    got = tmp_path / "got.bin"
    nodes[-1].ok("get", cid, "-o", str(got))
    assert got.read_bytes() == src.read_bytes()


def test_untrust_while_connected_takes_access_away(
    make_node: Callable[[str], Daemon], tmp_path: Path
) -> None:
    a, b = make_node("a"), make_node("b")
    a.start(config=FAST_GOSSIP)
    b.start(a, config=FAST_GOSSIP)
    wait_for(lambda: a.connected_to(b) and b.connected_to(a), 30, "the nodes to connect")
    a.trust(b, "trusted")
    b.trust(a, "member")
    rows = trusted(a)
    assert rows[b.node_id]["level"] == "trusted" and rows[b.node_id]["source"] == "local"
    src = tmp_path / "a.bin"
    src.write_bytes(payload(2 * CS, 32))
    cid = a.ok("add", str(src)).split()[-1]
    wait_for(lambda: a.node_id in sources(b, cid), 30, "b to learn what a holds")
    b.ok("get", cid, "-o", str(tmp_path / "first.bin"))
    b.ok("rm", cid)

    untrusted = json.loads(a.ok("--json", "untrust", b.node_id))
    assert untrusted == {"node_id": b.node_id, "level": "stranger"}
    assert b.node_id not in trusted(a)
    assert a.connected_to(b)  # the connection stays; what it may do does not
    refused = b.cli("get", cid, "-o", str(tmp_path / "second.bin"))
    assert refused.returncode == 1, refused.stderr
    assert not (tmp_path / "second.bin").exists()
    assert "trust_changed" in a.log()


def test_trust_refuses_own_id_and_bad_input(make_node: Callable[[str], Daemon]) -> None:
    a = make_node("a")
    offline = a.cli("trust", a.node_id, "--level", "member")
    assert offline.returncode == 1 and "itself" in offline.stderr
    a.start()
    running = a.cli("trust", a.node_id, "--level", "trusted")
    assert running.returncode == 1 and "itself" in running.stderr
    assert running.stderr.count("\n") == 1
    assert a.cli("untrust", "hfnot-a-node-id").returncode == 2
    assert trusted(a) == {}


def test_untrust_during_a_fetch_stops_that_source_only(
    make_node: Callable[[str], Daemon], tmp_path: Path, proxies: list[Proxy]
) -> None:
    a, b, f = make_node("a"), make_node("b"), make_node("f")
    for holder in (a, b):
        holder.trust(f, "member")
        f.trust(holder, "member")
    src = write_blob(tmp_path / "src.bin", 32, 61)
    for holder in (a, b):
        holder.start(config=FAST_GOSSIP)
        cid = holder.ok("add", str(src)).split()[-1]
    # 1 MiB/s a link: the 32 MiB take at least 16 s, so the untrust below lands
    # mid-fetch even when a CLI call takes seconds on a loaded machine.
    slow = [Proxy(tmp_path, h.port, 1 * MIB) for h in (a, b)]
    proxies.extend(slow)
    f.start(*(p.port for p in slow), config=FAST_GOSSIP)
    wait_for(lambda: knows(f, cid, [a, b]), 60, "the fetcher to learn both holders")
    getter = f.background("get", cid, "-o", str(tmp_path / "out.bin"))
    wait_for(lambda: fetched_bytes(f) >= 4 * MIB, 60, "the fetch to get going")
    a.ok("untrust", f.node_id)
    assert getter.poll() is None, "the fetch ended before the untrust: nothing was tested"
    _, err = getter.communicate(timeout=180)
    assert getter.returncode == 0, err.decode()
    assert (tmp_path / "out.bin").read_bytes() == src.read_bytes()
    assert "trust_enforced peer=" in a.log()  # a's serving calls were running, and stopped
    got = shares(f, cid)
    assert got[b.node_id] > got.get(a.node_id, 0), got  # b carried the rest


def fetched_bytes(node: Daemon) -> int:
    return sum(int(r["done_bytes"]) for r in json.loads(node.ok("--json", "transfers")))
