#!/usr/bin/env python3
"""Benchmark joining: from ``hearthfile join`` to fetching a blob held by the farthest node.

Run from the repository (after scripts/test has built the virtual environment):

    .venv/bin/python scripts/bench_join.py [--nodes 10] [--interval 1.0] [--rounds 2]
        [--window 10] [--dir SCRATCH] [--json]

Each round builds a network of ``--nodes - 1`` daemons in a chain of invites (node k
joins node k-1 at level trusted, so each is an introducer for the next), on loopback,
every step through the real CLI. Node k-1's blob sits on the farthest node. A fresh node
then runs ``hearthfile join TOKEN`` with a member invite from node 0, and the script
times, from the start of ``join``:

- join: the ``join`` process exits (the newcomer is a member of node 0);
- trusted: the newcomer's ``trusted`` lists the farthest node (introductions crossed);
- whohas: its ``whohas`` lists the farthest node as a holder (gossip crossed);
- fetch: a ``get`` of that blob succeeds (retried until it does).

Baseline, same round: a second blob added on the farthest node once everything settled,
fetched by the newcomer with one ``get`` (the cost of the fetch itself). The ratio says
how much joining adds. Then, with the network idle, the bytes every node sends on the
bus over ``--window`` gossip rounds (``peers --json`` counters, plaintext frame bytes:
gossip, introductions, keepalives), per node per round, and the introduction records
each node holds (173 bytes each on the wire).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Node:
    def __init__(self, home: Path, interval_s: float) -> None:
        self.home = home
        home.mkdir(parents=True)
        (home / "config.yaml").write_text(f"gossip:\n  interval_s: {interval_s}\n")
        self.cli("init")
        self.node_id = self.cli("id").strip()
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "hearthfile", "--home", str(self.home), *args],
            capture_output=True,
            check=False,
            cwd=ROOT,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"hearthfile {' '.join(args)}: {done.stderr.decode().strip()}")
        return done.stdout.decode() if done.returncode == 0 else ""

    def start(self) -> Node:
        log = open(self.home / "daemon.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hearthfile",
                "--home",
                str(self.home),
                "run",
                "--listen",
                "127.0.0.1:0",
            ],
            stdout=log,
            stderr=log,
            cwd=ROOT,
        )
        poll(lambda: (self.home / "daemon.json").exists(), 30)
        poll(lambda: self.cli("status", check=False), 30)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)

    def json(self, *args: str) -> object:
        return json.loads(self.cli("--json", *args))

    def trusts(self, other: Node) -> bool:
        return any(r["node_id"] == other.node_id for r in self.json("trusted"))  # type: ignore[union-attr]

    def holders(self, cid: str) -> set[str]:
        return {r["node_id"] for r in self.json("whohas", cid)}  # type: ignore[union-attr]

    def bytes_out(self) -> int:
        return sum(int(r["bytes_out"]) for r in self.json("peers"))  # type: ignore[union-attr]

    def add(self, path: Path) -> str:
        return self.cli("add", str(path)).split()[-1]


def poll(condition, timeout_s: float) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError("condition not met in time")
        time.sleep(0.05)
    return time.monotonic()


def one_round(scratch: Path, n: int, interval_s: float, window: int) -> dict[str, float]:
    nodes = [Node(scratch / "n0", interval_s).start()]
    for k in range(1, n - 1):
        node = Node(scratch / f"n{k}", interval_s).start()
        token = nodes[-1].cli("invite", "--level", "trusted").splitlines()[-1]
        node.cli("join", token)
        nodes.append(node)
    far = nodes[-1]
    blob = scratch / "far.bin"
    blob.write_bytes(os.urandom(4 * 1024 * 1024))
    cid = far.add(blob)
    for node in nodes[:-1]:
        poll(lambda node=node: far.node_id in node.holders(cid), 120)
    new = Node(scratch / "new", interval_s).start()
    token = nodes[0].cli("invite").splitlines()[-1]
    t0 = time.monotonic()
    new.cli("join", token)
    t_join = time.monotonic()
    t_trusted = poll(lambda: new.trusts(far), 120)
    t_whohas = poll(lambda: far.node_id in new.holders(cid), 120)
    t_fetch = poll(
        lambda: new.cli("get", cid, "-o", str(scratch / "got.bin"), check=False) != "", 120
    )
    assert (scratch / "got.bin").read_bytes() == blob.read_bytes()
    second = scratch / "far2.bin"
    second.write_bytes(os.urandom(4 * 1024 * 1024))
    cid2 = far.add(second)
    poll(lambda: far.node_id in new.holders(cid2), 120)
    b0 = time.monotonic()
    new.cli("get", cid2, "-o", str(scratch / "got2.bin"))
    baseline = time.monotonic() - b0
    everyone = [*nodes, new]
    before = sum(x.bytes_out() for x in everyone)
    time.sleep(window * interval_s)  # a measurement window, not synchronisation
    after = sum(x.bytes_out() for x in everyone)
    records = [
        len(json.loads((x.home / "introductions.json").read_text())["records"])
        for x in everyone
        if (x.home / "introductions.json").exists()
    ]
    for x in everyone:
        x.stop()
    return {
        "join_s": t_join - t0,
        "trusted_s": t_trusted - t0,
        "whohas_s": t_whohas - t0,
        "fetch_s": t_fetch - t0,
        "baseline_get_s": baseline,
        "ratio": (t_fetch - t0) / baseline,
        "rounds_to_fetch": (t_fetch - t0) / interval_s,
        "bytes_per_node_per_round": (after - before) / len(everyone) / window,
        "intro_records_per_node": statistics.mean(records) if records else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--interval", type=float, default=1.0, help="gossip interval_s")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--window", type=int, default=10, help="gossip rounds measured idle")
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-join-", dir=args.dir or "/var/tmp"))
    results = []
    try:
        for r in range(args.rounds):
            results.append(one_round(base / f"r{r}", args.nodes, args.interval, args.window))
            if not args.json:
                print(
                    f"round {r + 1}: " + "  ".join(f"{k}={v:.2f}" for k, v in results[-1].items())
                )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    medians = {k: statistics.median(r[k] for r in results) for k in results[0]}
    if args.json:
        print(json.dumps({"rounds": results, "median": medians}, indent=1))
    else:
        print("median:  " + "  ".join(f"{k}={v:.2f}" for k, v in medians.items()))


if __name__ == "__main__":
    main()
