#!/usr/bin/env python3
"""Compare URL downloads between two trees of hearthfile (and curl), alternated.

    .venv/bin/python scripts/bench_download_ab.py OTHER_TREE [--size-mib 1024]
        [--rounds 5] [--dir SCRATCH] [--keep]

OTHER_TREE is another checkout with its own ``.venv`` (``scripts/test`` builds it).
nginx (sendfile) serves one random file on loopback; one daemon per tree, each
started by its own tree's Python. Each round runs, in an order that flips every
round, ``curl -o FILE`` and ``hearthfile download --refresh URL`` on each daemon
(its previous blob removed first). For each tree it reports, as medians: the
command's time from spawn to exit, the daemon's time from the download's start to
Completed (from its log), the command's time around it (start-up, the calls, the
end), and the daemon's CPU seconds. This is what separates a change to the daemon
from a change to the command line; ``bench_download.py`` gives the figures against
curl and aria2c.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_download import cpu_of, forget
from bench_http import Node, start_nginx, timed
from benchbase import load_average, scratch, write_random

ROOT = Path(__file__).resolve().parent.parent
WIDTHS = (10, 8, 9, 9, 13)


def daemon_seconds(node: Node) -> float:
    """From the last download's start to its Completed, as the daemon logged them."""
    lines = (node.home / "daemon.log").read_text().splitlines()
    start = [line for line in lines if "download_start" in line][-1]
    end = [line for line in lines if "download_Completed" in line][-1]
    return (_stamp(end) - _stamp(start)).total_seconds()


def _stamp(line: str) -> datetime:
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("other", type=Path)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    with scratch(args.dir, args.keep, "bench-download-ab-") as root:
        www = root / "www"
        www.mkdir()
        write_random(www / "file.bin", args.size_mib * 1024 * 1024)
        nginx, origin = start_nginx(root, www)
        trees = {"this tree": ROOT, "other tree": args.other.resolve()}
        nodes: dict[str, Node] = {}
        try:
            for i, (name, tree) in enumerate(trees.items()):
                nodes[name] = Node(root / f"n{i}", python=str(tree / ".venv" / "bin" / "python"))
                nodes[name].start([])
            run(root, nodes, f"{origin}/file.bin", args)
        finally:
            for node in nodes.values():
                node.stop()
            nginx.terminate()
            nginx.wait(10)


def run(root: Path, nodes: dict[str, Node], url: str, args: argparse.Namespace) -> None:
    wall: dict[str, list[float]] = {name: [] for name in ["curl", *nodes]}
    daemon: dict[str, list[float]] = {name: [] for name in nodes}
    cpu: dict[str, list[float]] = {name: [] for name in nodes}
    out = root / "out.bin"
    for round_ in range(args.rounds):
        order = ["curl", *nodes]
        for name in order if round_ % 2 == 0 else reversed(order):
            if name == "curl":
                wall[name].append(timed(["curl", "-sS", "-o", str(out), url]))
                out.unlink()
                continue
            node = nodes[name]
            forget(node, url)
            assert node.proc is not None
            before = cpu_of(node.proc.pid)
            wall[name].append(
                timed(
                    [
                        node.python,
                        "-m",
                        "hearthfile",
                        "--home",
                        str(node.home),
                        "download",
                        "--refresh",
                        url,
                    ]
                )
            )
            cpu[name].append(cpu_of(node.proc.pid) - before)
            daemon[name].append(daemon_seconds(node))
        print(f"round {round_ + 1}: load {load_average()}", file=sys.stderr)
    med = statistics.median
    curl = med(wall["curl"])
    print(f"{args.size_mib} MiB, {args.rounds} rounds, medians; curl {curl:.3f} s")
    heads = ("command s", "vs curl", "daemon s", "around s", "daemon CPU-s")
    print(f"{'tree':12} " + " ".join(f"{h:>{w}}" for h, w in zip(heads, WIDTHS, strict=True)))
    for name in nodes:
        around = med(w - d for w, d in zip(wall[name], daemon[name], strict=True))
        print(
            f"{name:12} {med(wall[name]):10.3f} {curl / med(wall[name]):7.2f}x"
            f" {med(daemon[name]):9.3f} {around:9.3f} {med(cpu[name]):13.2f}"
        )


if __name__ == "__main__":
    main()
