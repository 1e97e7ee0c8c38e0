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
import json
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_download import cpu_of
from bench_http import start_nginx, timed
from benchbase import load_average, scratch, write_random

ROOT = Path(__file__).resolve().parent.parent
WIDTHS = (10, 8, 9, 9, 13)


class TreeNode:
    """A daemon run by one tree's Python, in its own home."""

    def __init__(self, tree: Path, home: Path) -> None:
        self.python = str(tree / ".venv" / "bin" / "python")
        self.home = home
        self.hf("init")
        log = open(home / "daemon.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [
                self.python,
                "-m",
                "hearthfile",
                "--home",
                str(home),
                "run",
                "--listen",
                "127.0.0.1:0",
            ],
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 60
        while self.hf("status", check=False) is None:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"the daemon of {tree} did not start")
            time.sleep(0.1)

    def hf(self, *args: str, check: bool = True) -> str | None:
        argv = [self.python, "-m", "hearthfile", "--home", str(self.home), *args]
        proc = subprocess.run(argv, capture_output=True, check=False)
        if proc.returncode != 0:
            if check:
                raise SystemExit(f"hearthfile {' '.join(args)}: {proc.stderr.decode().strip()}")
            return None
        return proc.stdout.decode()

    def forget(self) -> None:
        for rec in json.loads(self.hf("--json", "downloads") or "[]"):
            if rec["cid"]:
                self.hf("unpin", rec["cid"], check=False)
                self.hf("rm", rec["cid"], check=False)

    def daemon_seconds(self) -> float:
        """From the last download's start to its Completed, as the daemon logged them."""
        lines = (self.home / "daemon.log").read_text().splitlines()
        start = [line for line in lines if "download_start" in line][-1]
        end = [line for line in lines if "download_Completed" in line][-1]
        return (_stamp(end) - _stamp(start)).total_seconds()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


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
        nodes: dict[str, TreeNode] = {}
        try:
            for i, (name, tree) in enumerate(trees.items()):
                nodes[name] = TreeNode(tree, root / f"n{i}")
            run(root, nodes, f"{origin}/file.bin", args)
        finally:
            for node in nodes.values():
                node.stop()
            nginx.terminate()
            nginx.wait(10)


def run(root: Path, nodes: dict[str, TreeNode], url: str, args: argparse.Namespace) -> None:
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
            node.forget()
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
            daemon[name].append(node.daemon_seconds())
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
