#!/usr/bin/env python3
"""Benchmark the HTTP gateway against nginx and the CLI, on loopback, in one run.

Run from the repository (after scripts/test has built the virtual environment):

    .venv/bin/python scripts/bench_http.py [--size-mib 1024] [--rounds 3]
        [--requests 2000] [--steps get,aria2c,miss,put,small] [--dir SCRATCH] [--keep] [--json]

It starts two real daemons through the CLI (A holds the blob, B dials A; each trusts
the other as a member), each with its gateway on a free loopback port, and nginx
(``nginx-light``) serving a copy of the same file with ``sendfile on``. In each round,
steps alternate (their order flips every round):

1. get: ``curl -o /dev/null`` of A's blob from the gateway vs the same file from nginx.
2. aria2c: ``aria2c -x4 -s4`` from the gateway vs from nginx, into a file on the scratch
   disk (removed after each step).
3. miss: ``curl -o /dev/null`` of the blob from B's gateway while B does not hold it
   (fetch on miss from A) vs ``hearthfile --home B get CID -o FILE``; B's copy is
   removed (``hearthfile rm``) before each step.
4. put: ``curl -T FILE`` to A's gateway (``PUT /blob``) vs ``hearthfile add FILE`` on A;
   the blob is unpinned and removed from A before each step.
5. small: ``--requests`` sequential GETs of a 4 KiB blob over one keep-alive connection
   (Python's http.client) from the gateway vs from nginx: requests per second.

Every tool is a separate process timed from spawn to exit. The table shows medians and
the ratio against the baseline of the same run. MB/s = 10^6 B/s. The machine is shared
with other work: compare the ratios, not the absolute numbers (PERF-NOTES.md).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchbase import load_average, scratch, write_random

Step = Callable[[], float]


def hf(home: Path, *args: str, timeout: float = 600, python: str = sys.executable) -> str:
    """``hearthfile --home HOME ARGS`` run by ``python`` (another tree's, for a
    comparison): its output, or the script stops with its error."""
    proc = subprocess.run(
        [python, "-m", "hearthfile", "--home", str(home), *args],
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"hearthfile {' '.join(args)}: {proc.stderr.decode().strip()}")
    return proc.stdout.decode()


def timed(argv: list[str], timeout: float = 600) -> float:
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    return elapsed


class Node:
    def __init__(self, home: Path, *peers: Node, python: str = sys.executable) -> None:
        self.home = home
        self.python = python
        hf(home, "init", python=python)
        self.node_id = hf(home, "id", python=python).strip()
        self.peers = peers
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, trust: list[str]) -> None:
        members = "".join(f"  {n}: member\n" for n in trust)
        (self.home / "config.yaml").write_text(f"trust:\n{members}")
        args = ["run", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"]
        for peer in self.peers:
            args += ["--peer", f"127.0.0.1:{peer.port}"]
        log = open(self.home / "daemon.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [self.python, "-m", "hearthfile", "--home", str(self.home), *args],
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 60
        while not self._status().get("http"):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"daemon in {self.home} did not start")
            time.sleep(0.1)
        self.url = "http://" + self._status()["http"]
        self.port = int(self._status()["listen"].rsplit(":", 1)[1])
        self.token = (self.home / "http.token").read_text().strip()

    def _status(self) -> dict[str, str]:
        if not (self.home / "daemon.json").exists():
            return {}
        proc = subprocess.run(
            [self.python, "-m", "hearthfile", "--home", str(self.home), "--json", "status"],
            capture_output=True,
            check=False,
        )
        return json.loads(proc.stdout) if proc.returncode == 0 else {}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


def start_nginx(root: Path, www: Path) -> tuple[subprocess.Popen[bytes], str]:
    """nginx on a free loopback port serving ``www`` with sendfile, as a foreground process."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    conf = root / "nginx.conf"
    # As root, nginx's workers would run as nobody, who cannot read the scratch directory.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(
        f"daemon off;\n{user}worker_processes 1;\npid {root}/nginx.pid;\n"
        f"error_log {root}/nginx-error.log;\nevents {{ worker_connections 1024; }}\n"
        "http {\n  sendfile on;\n  tcp_nopush on;\n  access_log off;\n"
        f"  client_body_temp_path {root}/nginx-body;\n  proxy_temp_path {root}/nginx-proxy;\n"
        f"  fastcgi_temp_path {root}/nginx-fcgi;\n  uwsgi_temp_path {root}/nginx-uwsgi;\n"
        f"  scgi_temp_path {root}/nginx-scgi;\n"
        f"  server {{ listen 127.0.0.1:{port}; root {www}; }}\n}}\n"
    )
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(root)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("HEAD", "/")
            return proc, url
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("nginx did not start") from None
            time.sleep(0.05)


def requests_per_s(url: str, path: str, count: int) -> float:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    started = time.perf_counter()
    for _ in range(count):
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"GET {path}: {response.status}")
    elapsed = time.perf_counter() - started
    conn.close()
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--dir")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--steps", default=",".join(BASELINES), help="comma-separated subset of the steps"
    )
    args = parser.parse_args()
    unknown = set(args.steps.split(",")) - set(BASELINES)
    if unknown:
        raise SystemExit(f"unknown steps {sorted(unknown)}; choose from {list(BASELINES)}")
    for tool in ("curl", "aria2c", "nginx"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt: curl aria2 nginx-light)")
    with scratch(args.dir, args.keep, "bench-http-") as root:
        run(root, args)


def run(root: Path, args: argparse.Namespace) -> None:
    size = args.size_mib * 1024 * 1024
    www = root / "www"
    www.mkdir()
    src = www / "blob.bin"
    write_random(src, size)
    (www / "small.bin").write_bytes(os.urandom(4096))
    a = Node(root / "a")
    b = Node(root / "b", a)
    nodes = [a, b]
    nginx, nginx_url = start_nginx(root, www)
    try:
        a.start([b.node_id])
        b.start([a.node_id])
        cid = hf(a.home, "add", str(src)).split()[-1]
        small = hf(a.home, "add", str(www / "small.bin")).split()[-1]
        results = measure(root, args, a, b, cid, small, src, nginx_url)
    finally:
        for node in nodes:
            node.stop()
        nginx.terminate()
        nginx.wait(10)
    report(results, args, size)


def measure(
    root: Path,
    args: argparse.Namespace,
    a: Node,
    b: Node,
    cid: str,
    small: str,
    src: Path,
    nginx_url: str,
) -> dict[str, list[float]]:
    out = root / "out.bin"
    devnull = ["-o", "/dev/null"]

    def forget_on_b() -> None:
        subprocess.run([sys.executable, "-m", "hearthfile", "--home", str(b.home), "rm", cid],
                       capture_output=True, check=False)  # fmt: skip

    def forget_on_a() -> None:
        for args_ in (["unpin", cid], ["rm", cid]):
            subprocess.run([sys.executable, "-m", "hearthfile", "--home", str(a.home), *args_],
                           capture_output=True, check=False)  # fmt: skip

    def aria(url: str) -> float:
        out.unlink(missing_ok=True)
        took = timed(["aria2c", "-q", "-x4", "-s4", "-k1M", "--file-allocation=none",
                      "-d", str(root), "-o", out.name, url])  # fmt: skip
        out.unlink(missing_ok=True)
        return took

    def miss_http() -> float:
        forget_on_b()
        return timed(["curl", "-sS", "--fail", *devnull, f"{b.url}/blob/{cid}"])

    def miss_cli() -> float:
        forget_on_b()
        out.unlink(missing_ok=True)
        took = timed([sys.executable, "-m", "hearthfile", "--home", str(b.home),
                       "get", cid, "-o", str(out)])  # fmt: skip
        out.unlink(missing_ok=True)
        return took

    def put_http() -> float:
        forget_on_a()
        auth = f"Authorization: Bearer {a.token}"
        return timed(["curl", "-sS", "--fail", "-o", "/dev/null", "-T", str(src),
                      "-H", auth, f"{a.url}/blob?name=blob.bin"])  # fmt: skip

    def put_cli() -> float:
        forget_on_a()
        return timed([sys.executable, "-m", "hearthfile", "--home", str(a.home), "add", str(src)])

    pairs: dict[str, tuple[Step, Step]] = {
        "get": (
            lambda: timed(["curl", "-sS", "--fail", *devnull, f"{a.url}/blob/{cid}"]),
            lambda: timed(["curl", "-sS", "--fail", *devnull, f"{nginx_url}/blob.bin"]),
        ),
        "aria2c": (lambda: aria(f"{a.url}/blob/{cid}"), lambda: aria(f"{nginx_url}/blob.bin")),
        "miss": (miss_http, miss_cli),
        "put": (put_http, put_cli),
        "small": (
            lambda: requests_per_s(a.url, f"/blob/{small}", args.requests),
            lambda: requests_per_s(nginx_url, "/small.bin", args.requests),
        ),
    }
    results: dict[str, list[float]] = {}
    for round_ in range(args.rounds):
        for name, (ours, base) in pairs.items():
            if name not in args.steps.split(","):
                continue
            order = [("ours", ours), ("base", base)]
            if round_ % 2:
                order.reverse()
            for side, step in order:
                os.sync()
                value = step()
                results.setdefault(f"{name}.{side}", []).append(value)
                print(f"round {round_ + 1} {name} {side}: {value:.3f}", file=sys.stderr)
    return results


BASELINES = {
    "get": "nginx sendfile, curl",
    "aria2c": "nginx sendfile, aria2c -x4",
    "miss": "hearthfile get on B",
    "put": "hearthfile add on A",
    "small": "nginx, 4 KiB",
}


def report(results: dict[str, list[float]], args: argparse.Namespace, size: int) -> None:
    rows = []
    for name, baseline in BASELINES.items():
        if f"{name}.ours" not in results:
            continue
        ours = statistics.median(results[f"{name}.ours"])
        base = statistics.median(results[f"{name}.base"])
        if name == "small":
            rows.append((name, f"{ours:,.0f} req/s", f"{base:,.0f} req/s", ours / base, baseline))
        else:
            rows.append((name, f"{size / ours / 1e6:,.0f} MB/s", f"{size / base / 1e6:,.0f} MB/s",
                         base / ours, baseline))  # fmt: skip
    if args.json:
        print(json.dumps({"results": results, "size": size}))
    print(f"bench_http: {args.size_mib} MiB, {args.rounds} rounds, load average {load_average()}")
    print(f"{'step':8} {'gateway':>14} {'baseline':>14} {'ratio':>6}  baseline")
    for name, ours_text, base_text, ratio, baseline in rows:
        print(f"{name:8} {ours_text:>14} {base_text:>14} {ratio:6.2f}  {baseline}")


if __name__ == "__main__":
    main()
