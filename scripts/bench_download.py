#!/usr/bin/env python3
"""Benchmark URL downloads against curl and aria2c, on loopback, in one run.

Run from the repository (after scripts/test has built the virtual environment):

    .venv/bin/python scripts/bench_download.py [--size-mib 1024] [--rounds 3]
        [--dir SCRATCH] [--keep] [--json]

nginx (``nginx-light``, sendfile on) serves one random file on a free loopback port:
the origin. Two real daemons run through the CLI (B dials A; each trusts the other as
a member). In each round, in an order that flips every round:

1. curl: ``curl -o FILE`` from the origin, into the scratch disk (removed after).
2. aria2c: ``aria2c -x4 -s4`` from the origin, into the scratch disk (removed after).
3. origin: ``hearthfile --home A download --refresh URL`` (A's record and blob removed
   before; ``--refresh`` because from round 2 on B holds the URL too).
Then 4. peers: ``hearthfile --home B download URL`` once B has learned from gossip that
A cached the URL: B fetches the blob from A, not from the origin (B's record and blob
removed before; the script checks nginx served nothing meanwhile).

Every tool is a separate process timed from spawn to exit, with the CPU it took: the
tool's own process, and for hearthfile also the daemons' (the CLI, the downloading
daemon, and for step 4 the serving one; read from /proc before and after). hearthfile's
download is
chunked, hashed (BLAKE3 per chunk and over the whole file) and stored with periodic
flushes, curl and aria2c only write the page cache. The table shows medians (time, CPU
seconds per GB) and the ratio against curl in the same run; MB/s = 10^6 B/s. Compare
ratios, not absolute numbers: the machine is shared (PERF-NOTES.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_http import Node, hf, start_nginx, timed
from benchbase import load_average, scratch, write_random

from hearthfile.services.downloads.core import url_key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    for tool in ("curl", "aria2c", "nginx"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt: curl aria2 nginx-light)")
    with scratch(args.dir, args.keep, "bench-download-") as root:
        run(root, args)


def run(root: Path, args: argparse.Namespace) -> None:
    size = args.size_mib * 1024 * 1024
    www = root / "www"
    www.mkdir()
    write_random(www / "file.bin", size)
    a = Node(root / "a")
    b = Node(root / "b", a)
    nginx, origin = start_nginx(root, www)
    try:
        a.start([b.node_id])
        b.start([a.node_id])
        results = measure(root, args, a, b, origin + "/file.bin")
    finally:
        for node in (a, b):
            node.stop()
        nginx.terminate()
        nginx.wait(10)
    report(results, size, args)


Sample = tuple[float, float]  # (seconds, CPU seconds)


def cpu_of(pid: int) -> float:
    """CPU seconds a running process has used (user + system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_cpu(argv: list[str], *daemons: Node) -> Sample:
    """``argv``'s time from spawn to exit, and the CPU it and ``daemons`` used meanwhile."""

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime + sum(cpu_of(d.proc.pid) for d in daemons if d.proc)

    before = cpu()
    elapsed = timed(argv)
    return elapsed, cpu() - before


def forget(node: Node, url: str) -> None:
    """Remove the node's download of ``url`` and its blob, so the next one starts cold."""
    for rec in json.loads(hf(node.home, "--json", "downloads", python=node.python)):
        if rec["url"] == url:
            hf(node.home, "downloads", "remove", rec["id"], python=node.python)
            if rec["cid"]:
                hf(node.home, "unpin", rec["cid"], python=node.python)
                hf(node.home, "rm", rec["cid"], python=node.python)


def measure(
    root: Path, args: argparse.Namespace, a: Node, b: Node, url: str
) -> dict[str, list[Sample]]:
    out = root / "out.bin"
    hearthfile = [sys.executable, "-m", "hearthfile", "--home"]

    def with_file(argv: list[str]) -> Sample:
        try:
            return timed_cpu(argv)
        finally:
            for path in root.glob("out.bin*"):
                path.unlink()

    def origin_step() -> Sample:
        forget(a, url)
        # --refresh: from round 2 on, B holds the URL too, and A would fetch it from B.
        sample = timed_cpu([*hearthfile, str(a.home), "download", "--refresh", url], a)
        check_source(a, "origin")
        return sample

    def peers_step() -> Sample:
        forget(b, url)
        key = url_key(url)
        deadline = time.monotonic() + 120
        while a.node_id not in hf(b.home, "whohas", key):
            if time.monotonic() > deadline:
                raise SystemExit("node B never learned that A cached the URL")
            time.sleep(0.2)
        sample = timed_cpu([*hearthfile, str(b.home), "download", url], b, a)
        check_source(b, "peers")
        return sample

    def check_source(node: Node, source: str) -> None:
        rec = json.loads(hf(node.home, "--json", "downloads"))[0]
        if rec["source"] != source:
            raise SystemExit(f"{node.home.name} downloaded from {rec['source']}, not {source}")

    steps: dict[str, Callable[[], Sample]] = {
        "curl": lambda: with_file(["curl", "-sS", "-o", str(out), url]),
        "aria2c -x4": lambda: with_file(
            [
                "aria2c",
                "-q",
                "-x4",
                "-s4",
                "--allow-overwrite=true",
                "-d",
                str(root),
                "-o",
                out.name,
                url,
            ]
        ),
        "hearthfile download (origin)": origin_step,
    }
    names = [*steps, "hearthfile download (peers)"]
    results: dict[str, list[Sample]] = {name: [] for name in names}
    for round_ in range(args.rounds):
        names = list(steps) if round_ % 2 == 0 else list(reversed(steps))
        for name in names:
            results[name].append(steps[name]())
        results["hearthfile download (peers)"].append(peers_step())
        print(f"round {round_ + 1}: load {load_average()}", file=sys.stderr)
    return results


def report(results: dict[str, list[Sample]], size: int, args: argparse.Namespace) -> None:
    medians = {name: statistics.median(s for s, _ in samples) for name, samples in results.items()}
    cpu = {name: statistics.median(c for _, c in samples) for name, samples in results.items()}
    if args.json:
        runs = {name: [s for s, _ in samples] for name, samples in results.items()}
        cpu_s = {name: [c for _, c in samples] for name, samples in results.items()}
        out = {"size": size, "seconds": runs, "cpu_s": cpu_s, "median_s": medians}
        print(json.dumps(out, indent=2))
        return
    curl = medians["curl"]
    origin = medians["hearthfile download (origin)"]
    print(f"{size / 2**20:.0f} MiB, {args.rounds} rounds, medians")
    print(f"{'step':32} {'s':>7} {'MB/s':>8} {'vs curl':>8} {'CPU-s/GB':>9}")
    for name, seconds in medians.items():
        print(
            f"{name:32} {seconds:7.2f} {size / seconds / 1e6:8.0f} {curl / seconds:7.2f}x"
            f" {cpu[name] / (size / 1e9):9.2f}"
        )
    peers = medians["hearthfile download (peers)"]
    print(f"second node from the first vs first node from the origin: {origin / peers:.2f}x")


if __name__ == "__main__":
    main()
