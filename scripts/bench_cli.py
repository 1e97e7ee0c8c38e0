"""CLI start-up: the wall time of whole ``hearthfile`` processes, this tree against another.

A daemon of this tree runs in a scratch home (with a 64 KiB file added, and a small
local HTTP origin for ``download``); each command then runs ``--runs`` times from
each tree, the two alternated (which goes first swaps every run), so a change of
load hits both alike. The other tree is ``git archive`` of ``--before`` (default
``HEAD~1``), byte-compiled like this one, run with this tree's Python and the same
dependencies. Commands: ``status``, ``ls``, ``stat CID``, ``cat CID`` (of a held
blob: no daemon call) and ``download --detach URL`` (the same URL: the daemon
answers with its existing record). ``python -c pass`` is the floor.

    .venv/bin/python scripts/bench_cli.py [--before REF] [--runs 40]
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from benchbase import load_average, run_checked, scratch

ROOT = Path(__file__).resolve().parents[1]
DAEMON_TIMEOUT_S = 60.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", default="HEAD~1", help="git ref of the other tree")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--dir", help="scratch parent (default /var/tmp)")
    args = parser.parse_args()
    with scratch(args.dir, False, "bench-cli-") as root:
        before = export_tree(args.before, root / "before")
        home = root / "home"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        hf = [sys.executable, "-m", "hearthfile", "--home", str(home)]
        run_checked([*hf, "init"], env=env, timeout=60, label="init")
        (root / "blob").write_bytes(os.urandom(64 * 1024))
        cid = run_checked([*hf, "add", str(root / "blob")], env=env, timeout=60, label="add")
        with origin(root) as url, daemon(hf, env, home):
            commands = {
                "status": ["status"],
                "ls": ["ls"],
                "stat CID": ["stat", cid.split()[-1]],
                "cat CID": ["cat", cid.split()[-1]],
                "download --detach": ["download", "--detach", url],
            }
            print(f"before {args.before}, after the working tree; load {load_average()}")
            measure(commands, before, home, args.runs)
            print(f"load {load_average()}")


def export_tree(ref: str, where: Path) -> Path:
    """``ref``'s package in ``where``, byte-compiled."""
    where.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "hearthfile"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive.stdout, check=True)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(where)], check=True)
    return where


@contextlib.contextmanager
def origin(root: Path) -> Iterator[str]:
    """A local HTTP server of ``root`` (the URL of its 64 KiB file)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, directory=str(root), **kw)  # type: ignore[arg-type]

        def log_message(self, format: str, *a: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/blob"
    finally:
        server.shutdown()


@contextlib.contextmanager
def daemon(hf: list[str], env: dict[str, str], home: Path) -> Iterator[None]:
    argv = [*hf, "run", "--listen", "127.0.0.1:0", "--http", "off"]
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + DAEMON_TIMEOUT_S
        while subprocess.run([*hf, "status"], env=env, capture_output=True).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the daemon did not start")
            time.sleep(0.1)  # polling a condition with a deadline
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=DAEMON_TIMEOUT_S)


def measure(commands: dict[str, list[str]], before: Path, home: Path, runs: int) -> None:
    trees = {"before": before, "after": ROOT}
    for tree, where in trees.items():  # each process must load its own tree's package
        probe = [sys.executable, "-c", "import hearthfile; print(hearthfile.__file__)"]
        env = {**os.environ, "PYTHONPATH": str(where)}
        loaded = subprocess.run(probe, env=env, cwd=home.parent, capture_output=True, text=True)
        if not loaded.stdout.startswith(str(where)):
            raise SystemExit(f"the {tree} tree loads {loaded.stdout.strip()}, not {where}")
    times: dict[tuple[str, str], list[float]] = {}
    floor: list[float] = []
    for n in range(runs):
        floor.append(timed([sys.executable, "-c", "pass"], dict(os.environ), home.parent))
        for label, argv in commands.items():
            order = ["before", "after"] if n % 2 == 0 else ["after", "before"]
            for tree in order:
                env = {**os.environ, "PYTHONPATH": str(trees[tree])}
                cmd = [sys.executable, "-m", "hearthfile", "--home", str(home), *argv]
                times.setdefault((label, tree), []).append(timed(cmd, env, home.parent))
    print(f"{'command':20} {'before (s)':>20} {'after (s)':>20} {'after/before':>13}")
    for label in commands:
        b, a = times[label, "before"], times[label, "after"]
        ratio = statistics.median(x / y for x, y in zip(a, b, strict=True))
        print(f"{label:20} {spread(b):>20} {spread(a):>20} {ratio:>12.2f}x")
    print(f"{'python -c pass':20} {spread(floor):>20}")
    print(f"medians (quartiles) of {runs} runs each, alternated; ratio: median of per-run ratios")


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    """Seconds of one process, run in ``cwd``: ``-m`` puts the working directory
    first on ``sys.path``, ahead of ``PYTHONPATH``, so it must hold neither tree."""
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[3:])} failed: {proc.stderr.decode().strip()}")
    return elapsed


def spread(values: list[float]) -> str:
    q1, med, q3 = statistics.quantiles(values, n=4)
    return f"{med:.3f} ({q1:.3f}-{q3:.3f})"


if __name__ == "__main__":
    main()
