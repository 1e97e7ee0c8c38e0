#!/usr/bin/env python3
"""Benchmark two real hearthfile daemons against bare trio-websocket, on loopback, in one run.

Run from the repository (after scripts/test has built the virtual environment):

    .venv/bin/python scripts/bench_node.py [--size-mib 1024] [--rounds 3] [--small 2000]
        [--per-call 50] [--dir SCRATCH] [--malloc-tuning] [--keep]

It makes two node homes A and B under a scratch directory (``--dir``, default a fresh
directory under /var/tmp; give one on a real disk, not tmpfs, since the stores write and
flush there), starts ``hearthfile run`` for each with the default configuration (so every
byte between them is Noise-encrypted), B dialing A with ``--peer`` and A trusting B at
level ``trusted``. Everything is driven through the real CLI, as separate processes.

1. get: a ``--size-mib`` random blob added on A. Timed: the whole ``hearthfile --home B
   get CID -o FILE`` process, from spawn to exit. That is CLI start-up, the fetch from A
   into B's store (every chunk verified, written, flushed with syncfs, indexed), then the
   copy of the blob from B's daemon to the CLI over the local bus and into FILE (page
   cache, no fsync). A second timed step isolates the fetch: a small driver process makes
   the same ``node.fetch`` call the CLI makes and times it alone. Between steps the blob
   is removed from B (``hearthfile rm``) so it is fetched again.
   Baseline: a bare, unencrypted trio-websocket server process sending the same file as
   256 KiB binary messages to a client process (1 MiB receive buffer) that discards them;
   timed from spawn to exit of the client, and inside it from request to last byte.
   Data flows server -> client in both, as in a fetch (B is the websocket client of A).
2. push: ``hearthfile --home B push CID --to A`` (whole process), the blob removed from A
   between rounds; plus the ``node.push`` call timed alone in a driver. Baseline: the same
   bare websocket, client -> server, so the baseline pays the client-side masking too.
3. small: ``--small`` blobs of 4 KiB added on A. B fetches ``--per-call`` of them with one
   ``hearthfile get CID -o FILE`` process each (the whole loop timed, cost per call
   extrapolated to all), and all of them with one ``hearthfile get CID... -o DIR``.
   ``hearthfile gc --all`` empties B between steps.

Steps alternate inside each round (their order flips every round), ``sync`` runs before
each timed step so one step's dirty pages are not flushed by the next, and the table
shows medians with the ratio against the baseline of the same run. MB/s = 10^6 B/s.
Absolute numbers swing between machines and runs (PERF-NOTES.md); compare the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import trio
import trio_websocket

CHUNK_BYTES = 256 * 1024
SMALL_BYTES = 4 * 1024
HOST = "127.0.0.1"
WS_PATH = "/bench"
RECEIVE_BUFFER_BYTES = 1024 * 1024
START_TIMEOUT_S = 30.0
#: node.fetch's max_concurrent in the daemon (hearthfile/services/node.py): a ``get`` of
#: many CIDs that runs more fetches at once than this is refused with ``busy``.
NODE_FETCH_MAX_CONCURRENT = 16
#: Settings from PERF-NOTES.md, applied to every process with ``--malloc-tuning``.
MALLOC_TUNING = {"MALLOC_MMAP_THRESHOLD_": "16777216", "MALLOC_TRIM_THRESHOLD_": "268435456"}


# --- baseline: bare trio-websocket, one process each side ---------------------------------


async def run_ws_server(path: str) -> None:
    """Serve ``path``: "down" sends it as 256 KiB messages; "up N" takes N bytes, then "done"."""

    async def handle(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        command = str(await ws.get_message()).split()
        if command[0] == "down":
            with open(path, "rb", buffering=0) as f:
                while chunk := f.read(CHUNK_BYTES):
                    await ws.send_message(chunk)
            await ws.get_message()  # the client's "done": every byte arrived
        else:
            expected, received = int(command[1]), 0
            while received < expected:
                received += len(await ws.get_message())
            await ws.send_message("done")
        await ws.aclose()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(
                trio_websocket.serve_websocket,
                handle,
                HOST,
                0,
                None,
                max_message_size=2 * CHUNK_BYTES,
                receive_buffer_size=RECEIVE_BUFFER_BYTES,
            )
        )
        print(f"PORT {server.port}", flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)  # until the orchestrator closes stdin
        nursery.cancel_scope.cancel()


async def run_ws_client(port: int, direction: str, path: str) -> None:
    """Move the file once in ``direction``; print the seconds from request to last byte."""
    size = os.path.getsize(path)
    async with trio.open_nursery() as nursery:
        ws = await trio_websocket.connect_websocket(
            nursery,
            HOST,
            port,
            WS_PATH,
            use_ssl=False,
            max_message_size=2 * CHUNK_BYTES,
            receive_buffer_size=RECEIVE_BUFFER_BYTES,
        )
        started = time.perf_counter()
        if direction == "down":
            await ws.send_message("down")
            received = 0
            while received < size:
                received += len(await ws.get_message())
            elapsed = time.perf_counter() - started
            await ws.send_message("done")
        else:
            await ws.send_message(f"up {size}")
            with open(path, "rb", buffering=0) as f:
                while chunk := f.read(CHUNK_BYTES):
                    await ws.send_message(chunk)
            await ws.get_message()  # "done": the server has every byte
            elapsed = time.perf_counter() - started
        await ws.aclose()
    print(json.dumps({"seconds": elapsed}), flush=True)


# --- driver: one node.* call, timed inside the process ------------------------------------


async def run_node_call(home: str, op: str, cid: str, target: str | None) -> None:
    """Make the ``node.fetch`` / ``node.push`` call the CLI makes, and time that call alone."""
    from hearthfile import cli

    args = argparse.Namespace(home=home)
    async with cli.open_node(args) as node:
        assert isinstance(node, cli.RemoteNode), "no daemon runs for this home"
        call_args = {"cid": cid} if target is None else {"cid": cid, "to": target}
        started = time.perf_counter()
        await node.call(op, call_args)
        elapsed = time.perf_counter() - started
    print(json.dumps({"seconds": elapsed}), flush=True)


# --- orchestrator ---------------------------------------------------------------------------


class Bench:
    """The scratch directory, the environment and the processes of one run."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []

    def hf(self, home: Path, *args: str, concurrency: int | None = None) -> str:
        """Run one CLI command to completion; its stdout, or exit with its stderr.

        ``concurrency`` runs the same CLI with ``GET_CONCURRENCY`` set to it (see
        ``_cli``), the work-around for a ``get`` of many CIDs failing with ``busy``.
        """
        cli = ["-m", "hearthfile"]
        if concurrency is not None:
            cli = [os.path.abspath(__file__), "_cli", str(concurrency)]
        proc = subprocess.run(
            [sys.executable, *cli, "--home", str(home), *args],
            capture_output=True,
            timeout=600,
            env=self.env,
            check=False,
        )
        if proc.returncode != 0:
            raise SystemExit(
                f"hearthfile {' '.join(args)[:200]} exited {proc.returncode}: "
                f"{proc.stderr.decode(errors='replace').strip()}"
            )
        return proc.stdout.decode()

    def timed_hf(self, home: Path, *args: str, concurrency: int | None = None) -> float:
        """Wall seconds of one whole CLI process, spawn to exit."""
        os.sync()
        started = time.perf_counter()
        self.hf(home, *args, concurrency=concurrency)
        return time.perf_counter() - started

    def timed_helper(self, *args: str) -> tuple[float, float]:
        """Wall seconds of one helper process and the seconds it reports itself."""
        os.sync()
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), *args],
            capture_output=True,
            timeout=600,
            env=self.env,
            check=False,
        )
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"helper {args[0]} failed: {proc.stderr.decode(errors='replace')}")
        inner = float(json.loads(proc.stdout.decode().strip().splitlines()[-1])["seconds"])
        return wall, inner

    def spawn_ws_server(self, path: Path) -> tuple[subprocess.Popen[bytes], int]:
        proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "_ws-server", str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=self.env,
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if not line.startswith("PORT "):
            raise SystemExit(f"baseline server said {line!r}")
        return proc, int(line.split()[1])

    def start_daemon(self, home: Path, peer_port: int | None = None) -> subprocess.Popen[bytes]:
        args = [sys.executable, "-m", "hearthfile", "--home", str(home), "run"]
        args += ["--listen", f"{HOST}:0"]
        if peer_port is not None:
            args += ["--peer", f"{HOST}:{peer_port}"]
        log = open(home / "daemon.log", "ab")  # noqa: SIM115 - owned by the process
        proc = subprocess.Popen(args, stdout=log, stderr=log, env=self.env)
        log.close()
        self.procs.append(proc)
        info = home / "daemon.json"
        wait_until(
            lambda: info.exists() and json.loads(info.read_text())["pid"] == proc.pid,
            f"the daemon in {home} to listen",
            proc,
            home,
        )
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is not None:
                continue
            if proc.stdin is not None:
                proc.stdin.close()  # the baseline server stops on it
            else:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


def wait_until(
    condition: Callable[[], bool], what: str, proc: subprocess.Popen[bytes], home: Path
) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            log = (home / "daemon.log").read_text(errors="replace")[-2000:]
            raise SystemExit(f"timed out waiting for {what}; daemon log:\n{log}")
        time.sleep(0.05)


def filesystem_of(path: Path) -> str:
    """The type of the filesystem holding ``path`` (from /proc/mounts), or "?"."""
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                mount = fields[1]
                inside = str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")
                if inside and len(mount) > len(best):
                    best, kind = mount, fields[2]
    except OSError:
        pass
    return kind


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            piece = min(left, 16 * 1024 * 1024)
            f.write(os.urandom(piece))
            left -= piece


def alternate(round_no: int, *steps: Callable[[], None]) -> None:
    """Run the steps in order on even rounds, reversed on odd ones."""
    for step in steps if round_no % 2 == 0 else reversed(steps):
        step()


@contextmanager
def scratch(dir_arg: str | None, keep: bool) -> Iterator[Path]:
    if dir_arg:
        Path(dir_arg).mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="hearthfile-bench-", dir=dir_arg or "/var/tmp"))
    try:
        yield root
    finally:
        if keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def orchestrate(args: argparse.Namespace) -> None:
    env = dict(os.environ)
    if args.malloc_tuning:
        env.update(MALLOC_TUNING)
    with scratch(args.dir, args.keep) as root:
        bench = Bench(root, env)
        try:
            results = measure(bench, args)
        finally:
            bench.stop_all()
    report(args, root, results)


def measure(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    root = bench.root
    size = args.size_mib * 1024 * 1024
    blob = root / "blob.bin"
    write_random(blob, size)
    home_a, home_b = root / "A", root / "B"
    for home in (home_a, home_b):
        bench.hf(home, "init")
    id_a = bench.hf(home_a, "id").strip()
    id_b = bench.hf(home_b, "id").strip()
    bench.hf(home_a, "trust", id_b, "--level", "trusted")
    bench.start_daemon(home_a)
    port_a = int(json.loads((home_a / "daemon.json").read_text())["port"])
    proc_b = bench.start_daemon(home_b, port_a)
    wait_until(
        lambda: any(p["node_id"] == id_a for p in json.loads(bench.hf(home_b, "--json", "peers"))),
        "B to connect to A",
        proc_b,
        home_b,
    )
    cid = bench.hf(home_a, "add", str(blob)).strip().splitlines()[-1]
    _, ws_port = bench.spawn_ws_server(blob)
    out = root / "out.bin"
    r: dict[str, list[float]] = {
        k: []
        for k in (
            "ws_down_wall",
            "ws_down_inner",
            "get_wall",
            "fetch_inner",
            "ws_up_wall",
            "ws_up_inner",
            "push_wall",
            "push_inner",
            "small_each",
            "small_batch",
        )
    }
    ws = str(ws_port)

    # 1. get: server -> client
    def ws_down() -> None:
        wall, inner = bench.timed_helper("_ws-client", ws, "down", str(blob))
        r["ws_down_wall"].append(wall)
        r["ws_down_inner"].append(inner)

    def get() -> None:
        r["get_wall"].append(bench.timed_hf(home_b, "get", cid, "-o", str(out)))
        if out.stat().st_size != size:
            raise SystemExit(f"get wrote {out.stat().st_size} bytes, expected {size}")
        out.unlink()
        bench.hf(home_b, "rm", cid)

    def fetch() -> None:
        r["fetch_inner"].append(bench.timed_helper("_node-call", str(home_b), "fetch", cid)[1])
        bench.hf(home_b, "rm", cid)

    for n in range(args.rounds):
        alternate(n, ws_down, get, fetch)

    # 2. push: client -> server (B holds the blob, A drops it between rounds)
    bench.hf(home_b, "get", cid, "-o", str(out))
    out.unlink()
    bench.hf(home_a, "rm", cid)

    def ws_up() -> None:
        wall, inner = bench.timed_helper("_ws-client", ws, "up", str(blob))
        r["ws_up_wall"].append(wall)
        r["ws_up_inner"].append(inner)

    def push() -> None:
        r["push_wall"].append(bench.timed_hf(home_b, "push", cid, "--to", id_a))
        bench.hf(home_a, "rm", cid)

    def push_call() -> None:
        r["push_inner"].append(bench.timed_helper("_node-call", str(home_b), "push", cid, id_a)[1])
        bench.hf(home_a, "rm", cid)

    for n in range(args.rounds):
        alternate(n, ws_up, push, push_call)

    # 3. small blobs: one get per CID vs one get for all
    bench.hf(home_b, "gc", "--all")
    small_dir = root / "small"
    small_dir.mkdir()
    paths = []
    for i in range(args.small):
        path = small_dir / f"s{i:06d}.bin"
        path.write_bytes(os.urandom(SMALL_BYTES))
        paths.append(str(path))
    cids = bench.hf(home_a, "add", *paths).split()
    if len(cids) != args.small:
        raise SystemExit(f"add printed {len(cids)} CIDs for {args.small} files")
    per_call = min(args.per_call, args.small)
    got = root / "got"

    def each() -> None:
        got.mkdir()
        os.sync()
        started = time.perf_counter()
        for i, c in enumerate(cids[:per_call]):
            bench.hf(home_b, "get", c, "-o", str(got / f"{i}.bin"))
        r["small_each"].append(per_call / (time.perf_counter() - started))
        shutil.rmtree(got)
        bench.hf(home_b, "gc", "--all")

    concurrency: list[int] = []  # set once the stock get of many has failed with busy

    def batch() -> None:
        try:
            elapsed = bench.timed_hf(home_b, "get", *cids, "-o", str(got), concurrency=limit())
        except SystemExit as exc:
            if concurrency or "busy" not in str(exc):
                raise
            concurrency.append(NODE_FETCH_MAX_CONCURRENT)
            print(f"note: {str(exc).splitlines()[0][-160:]}", file=sys.stderr)
            shutil.rmtree(got, ignore_errors=True)
            bench.hf(home_b, "gc", "--all")
            elapsed = bench.timed_hf(home_b, "get", *cids, "-o", str(got), concurrency=limit())
        if len(os.listdir(got)) != len(cids):
            raise SystemExit(f"get of many wrote {len(os.listdir(got))} of {len(cids)} files")
        r["small_batch"].append(len(cids) / elapsed)
        shutil.rmtree(got)
        bench.hf(home_b, "gc", "--all")

    def limit() -> int | None:
        return concurrency[0] if concurrency else None

    for n in range(args.rounds):
        alternate(n, each, batch)
    return {"rounds": r, "size": size, "per_call": per_call, "get_concurrency": limit()}


# --- report ---------------------------------------------------------------------------------


def report(args: argparse.Namespace, root: Path, results: dict[str, Any]) -> None:
    r, size = results["rounds"], results["size"]

    def rates(key: str) -> list[float]:
        return [size / s / 1e6 for s in r[key]]

    def med(values: list[float]) -> float:
        return statistics.median(values)

    rows: list[tuple[str, str, str, str]] = []

    def bulk(label: str, key: str, base_key: str | None) -> None:
        values = rates(key)
        ratio = f"{med(values) / med(rates(base_key)):.2f}x" if base_key else "1.00x"
        rows.append((label, f"{med(values):,.0f}", ratio, " ".join(f"{v:,.0f}" for v in values)))

    bulk("bare ws S->C, client process", "ws_down_wall", None)
    bulk("  of which request..last byte", "ws_down_inner", None)
    bulk("get -o FILE, whole CLI process", "get_wall", "ws_down_wall")
    bulk("  node.fetch alone, into B's store", "fetch_inner", "ws_down_inner")
    rows.append(("", "", "", ""))
    bulk("bare ws C->S (masked), client process", "ws_up_wall", None)
    bulk("  of which request..last byte", "ws_up_inner", None)
    bulk("push, whole CLI process", "push_wall", "ws_up_wall")
    bulk("  node.push alone", "push_inner", "ws_up_inner")
    rows.append(("", "", "", ""))
    each, batch = r["small_each"], r["small_batch"]
    rows.append(
        (
            f"small: one get per CID ({results['per_call']} of {args.small})",
            f"{med(each):,.1f}",
            "1.00x",
            " ".join(f"{v:,.1f}" for v in each),
        )
    )
    rows.append(
        (
            f"small: one get of all {args.small}",
            f"{med(batch):,.0f}",
            f"{med(batch) / med(each):.0f}x",
            " ".join(f"{v:,.0f}" for v in batch),
        )
    )
    print(
        f"bench_node: {args.size_mib} MiB blob, {args.rounds} rounds, {args.small} x 4 KiB, "
        f"loopback, {os.cpu_count()} CPUs, scratch on {filesystem_of(root)}, "
        f"malloc tuning {'on' if args.malloc_tuning else 'off'}"
    )
    header = ("", "MB/s | blobs/s", "ratio", "rounds")
    width = max(len(row[0]) for row in [*rows, header])
    print(f"  {header[0]:<{width}}  {header[1]:>15}  {header[2]:>6}  {header[3]}")
    for name, value, ratio, detail in rows:
        print(f"  {name:<{width}}  {value:>15}  {ratio:>6}  {detail}".rstrip())
    if results["get_concurrency"] is not None:
        print(
            f"  note: the stock 'get' of {args.small} CIDs failed with busy (the CLI runs "
            f"{cli_get_concurrency()} fetches at once, the daemon admits "
            f"{NODE_FETCH_MAX_CONCURRENT}); measured with the CLI's GET_CONCURRENCY set to "
            f"{results['get_concurrency']}"
        )
    get_ratio = med(rates("get_wall")) / med(rates("ws_down_wall"))
    verdict = "met" if get_ratio >= 0.35 else "missed"
    print(f"  goal: get >= 0.35x bare websocket S->C: {get_ratio:.2f}x, {verdict}")
    per_call_ms = 1000 / med(each)
    print(
        f"  one get per CID: {per_call_ms:,.0f} ms a call, so ~{args.small * per_call_ms / 1000:,.0f} s "
        f"for all {args.small} (one call: {args.small / med(batch):,.1f} s)"
    )


def run_cli_limited(concurrency: str, *argv: str) -> None:
    """The hearthfile CLI with ``GET_CONCURRENCY`` lowered to ``concurrency``."""
    from hearthfile import cli

    cli.GET_CONCURRENCY = int(concurrency)
    sys.exit(cli.main(list(argv)))


def cli_get_concurrency() -> int:
    from hearthfile import cli

    return cli.GET_CONCURRENCY


MODES: dict[str, Callable[..., Any]] = {
    "_cli": run_cli_limited,
    "_ws-server": lambda path: trio.run(run_ws_server, path),
    "_ws-client": lambda port, direction, path: trio.run(
        run_ws_client, int(port), direction, path
    ),
    "_node-call": lambda home, op, cid, target=None: trio.run(
        run_node_call, home, op, cid, target
    ),
}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in MODES:
        MODES[sys.argv[1]](*sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the bulk blob")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each measurement")
    parser.add_argument("--small", type=int, default=2000, help="number of 4 KiB blobs")
    parser.add_argument(
        "--per-call", type=int, default=50, help="small blobs fetched with one CLI call each"
    )
    parser.add_argument("--dir", help="scratch directory on a real disk (default /var/tmp)")
    parser.add_argument("--malloc-tuning", action="store_true", help="MALLOC_* env for all")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    orchestrate(parser.parse_args())


if __name__ == "__main__":
    main()
