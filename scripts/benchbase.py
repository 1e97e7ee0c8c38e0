"""What the benchmark scripts share: the bare trio-websocket baseline and run facts.

The baseline every network benchmark compares against is a plain, unencrypted
trio-websocket connection between two processes on loopback, moving 256 KiB binary
messages with a 1 MiB receive buffer (PERF-NOTES.md item 1). The server side waits in
``serve_baseline`` until the orchestrator closes its stdin; it prints ``PORT n`` first.
Scripts import this module from beside them (``scripts/`` is on ``sys.path`` when a
script runs).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path

import trio
import trio_websocket

CHUNK_BYTES = 256 * 1024
HOST = "127.0.0.1"
WS_PATH = "/bench"
RECEIVE_BUFFER_BYTES = 1024 * 1024
#: Settings from PERF-NOTES.md, applied to every process with ``--malloc-tuning``.
MALLOC_TUNING = {"MALLOC_MMAP_THRESHOLD_": "16777216", "MALLOC_TRIM_THRESHOLD_": "268435456"}

Handler = Callable[[trio_websocket.WebSocketConnection], Awaitable[None]]


def announce(port: int) -> None:
    print(f"PORT {port}", flush=True)


async def wait_for_stdin_close() -> None:
    """Servers live until the orchestrator closes their stdin (or dies)."""
    await trio.to_thread.run_sync(sys.stdin.read)


async def serve_baseline(handle: Handler) -> None:
    """Accept baseline connections on loopback, each handled by ``handle``; print the
    port, then serve until stdin closes."""

    async def accept(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        await handle(ws)
        await ws.aclose()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(
                trio_websocket.serve_websocket,
                accept,
                HOST,
                0,
                None,
                max_message_size=2 * CHUNK_BYTES,
                receive_buffer_size=RECEIVE_BUFFER_BYTES,
            )
        )
        announce(server.port)
        await wait_for_stdin_close()
        nursery.cancel_scope.cancel()


async def connect_baseline(nursery: trio.Nursery, port: int) -> trio_websocket.WebSocketConnection:
    return await trio_websocket.connect_websocket(
        nursery,
        HOST,
        port,
        WS_PATH,
        use_ssl=False,
        max_message_size=2 * CHUNK_BYTES,
        receive_buffer_size=RECEIVE_BUFFER_BYTES,
    )


async def run_file_server(path: str) -> None:
    """The baseline server of a file: to a client that says "down" it sends ``path`` as
    256 KiB messages; from one that says "up N" it takes N bytes, then says "done"."""

    async def handle(ws: trio_websocket.WebSocketConnection) -> None:
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

    await serve_baseline(handle)


async def run_file_client(port: int, direction: str, path: str) -> None:
    """Move ``path`` once in ``direction`` ("down": server to client, "up": client to
    server); print JSON: seconds and CPU from request to last byte, and peak RSS."""
    size = os.path.getsize(path)
    async with trio.open_nursery() as nursery:
        ws = await connect_baseline(nursery, port)
        started, cpu = time.perf_counter(), time.process_time()
        if direction == "down":
            await ws.send_message("down")
            received = 0
            while received < size:
                received += len(await ws.get_message())
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            await ws.send_message("done")
        else:
            await ws.send_message(f"up {size}")
            with open(path, "rb", buffering=0) as f:
                while chunk := f.read(CHUNK_BYTES):
                    await ws.send_message(chunk)
            await ws.get_message()  # "done": the server has every byte
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        await ws.aclose()
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": elapsed, "cpu": cpu, "rss_kib": rss_kib}), flush=True)


def load_average() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def filesystem_of(path: Path) -> str:
    """The type and device of the filesystem holding ``path`` (from /proc/mounts)."""
    best, kind = "", "?"
    with contextlib.suppress(OSError), open("/proc/mounts") as mounts:
        for line in mounts:
            device, mount, fstype = line.split()[:3]
            inside = str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")
            if inside and len(mount) > len(best):
                best, kind = mount, f"{fstype} on {device}"
    return kind


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            piece = min(left, 16 * 1024 * 1024)
            f.write(os.urandom(piece))
            left -= piece


@contextlib.contextmanager
def scratch(dir_arg: str | None, keep: bool, prefix: str) -> Iterator[Path]:
    """A fresh directory under ``dir_arg`` (default /var/tmp), removed at the end
    unless ``keep``."""
    parent = Path(dir_arg or "/var/tmp")
    parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield root
    finally:
        if keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def create_cost_us(parent: Path, count: int = 200) -> float:
    """Median microseconds to create one empty file in a new directory under ``parent``.

    A store writes a file per chunk, so this filesystem cost is paid 4,096 times per
    GiB; on ext4 it ranges from about 10 to 500 us depending on where the directory
    lands and how many inodes near it were deleted recently (BENCHMARKS.md).
    """
    where = Path(tempfile.mkdtemp(prefix="create-probe-", dir=parent))
    times = []
    try:
        for n in range(count):
            started = time.perf_counter()
            os.close(os.open(where / str(n), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            times.append(time.perf_counter() - started)
    finally:
        shutil.rmtree(where, ignore_errors=True)
    return statistics.median(times) * 1e6


def run_checked(argv: list[str], *, env: dict[str, str], timeout: float, label: str) -> str:
    """Run a command to completion; its stdout, or exit naming ``label`` with its stderr."""
    proc = subprocess.run(argv, capture_output=True, timeout=timeout, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(
            f"{label[:200]} exited {proc.returncode}: "
            f"{proc.stderr.decode(errors='replace').strip()}"
        )
    return proc.stdout.decode()
