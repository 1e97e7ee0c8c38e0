#!/usr/bin/env python3
"""Benchmark the capability bus against bare trio-websocket, on loopback, in one run.

Run from the repository (after scripts/test has built the virtual environment):

    .venv/bin/python scripts/bench_bus.py [--gib 1] [--rounds 3] [--idle 500]

It starts separate processes for every server and for the client, all with the same
environment, and prints one table:

1. bulk: ``--gib`` GiB in 256 KiB data frames of one ``open_call`` stream, server to
   client, through the Noise-encrypted bus; the same data frames sent straight
   through the secure channel (no call layer: what the transport alone costs); and the
   same bytes as 256 KiB binary messages through bare, unencrypted trio-websocket
   (1 MiB receive buffer); and the secure channel client -> server (a push: the
   client masks). Rounds alternate between them; ratios are of medians. Each also
   gives the CPU microseconds per chunk of the receiving and the sending process.
2. calls: small request/response calls per second, 1 and 64 in flight.
3. memory: the growth of a fresh server's VmRSS (/proc/<pid>/status) once it holds
   ``--idle`` idle authenticated connections, per connection.

Absolute numbers swing between machines and runs (docs: PERF-NOTES.md); compare the
ratio. ``--no-malloc-tuning`` runs the processes with glibc's default malloc settings
instead of the thresholds recommended for the daemon.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import trio
import trio_websocket
from benchbase import (
    CHUNK_BYTES,
    HOST,
    MALLOC_TUNING,
    announce,
    connect_baseline,
    serve_baseline,
    wait_for_stdin_close,
)

from hearthfile.bus import wsmask
from hearthfile.bus.capability import CallContext, CapabilityDescriptor, Registry, TrustLevel
from hearthfile.bus.client import open_secure_channel
from hearthfile.bus.connection import Connection
from hearthfile.bus.frames import Data, decode, encode
from hearthfile.bus.server import serve_secure
from hearthfile.config import Address
from hearthfile.identity import NodeId, NodeKey

CALL_SECONDS = 2.0


# --- server processes ----------------------------------------------------------------------


def bench_registry(chunk: bytes) -> Registry:
    async def stream(ctx: CallContext) -> int:
        count = int(ctx.args)
        for i in range(count):
            await ctx.send({"i": i, "data": chunk})
        return count

    async def echo(ctx: CallContext) -> Any:
        return ctx.args

    common: dict[str, Any] = {
        "version": (1, 0),
        "trust_required": TrustLevel.STRANGER,
        "timeout_seconds": 3600.0,
    }
    registry = Registry()
    registry.register(CapabilityDescriptor(name="bench.stream", max_concurrent=4, **common), stream)
    registry.register(CapabilityDescriptor(name="bench.echo", max_concurrent=256, **common), echo)
    return registry


def everyone(peer: NodeId) -> TrustLevel:
    return TrustLevel.MEMBER


async def run_bus_server() -> None:
    registry = bench_registry(os.urandom(CHUNK_BYTES))

    async def handle(channel: Any) -> None:
        await Connection(channel, registry, everyone, initiator=False).serve()

    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            partial(serve_secure, Address(HOST, 0), NodeKey.generate(), handle)
        )
        announce(port)
        await wait_for_stdin_close()
        nursery.cancel_scope.cancel()


async def run_secure_server() -> None:
    """The secure channel alone: pre-encoded data frames, no calls, no credit."""
    frame = bytes(encode(Data(1, {"i": 0, "data": os.urandom(CHUNK_BYTES)})))

    async def handle(channel: Any) -> None:
        way, count = bytes(await channel.receive_message()).split()
        if way == b"up":  # client -> server, as a push: masked websocket frames
            for _ in range(int(count)):
                decode(await channel.receive_message())
            await channel.send_message(b"done")
            return
        for _ in range(int(count)):
            await channel.send_message(frame)
        await channel.receive_message()  # the client's "done": every byte arrived

    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            partial(serve_secure, Address(HOST, 0), NodeKey.generate(), handle)
        )
        announce(port)
        await wait_for_stdin_close()
        nursery.cancel_scope.cancel()


async def run_ws_server() -> None:
    chunk = os.urandom(CHUNK_BYTES)

    async def handle(ws: trio_websocket.WebSocketConnection) -> None:
        count = int(await ws.get_message())
        for _ in range(count):
            await ws.send_message(chunk)
        await ws.get_message()  # the client's "done": every byte arrived

    await serve_baseline(handle)


# --- client process ------------------------------------------------------------------------


async def bulk_bus(port: int, count: int) -> float:
    async with open_secure_channel(Address(HOST, port), NodeKey.generate()) as channel:
        conn = Connection(channel, Registry(), everyone, initiator=True)
        async with trio.open_nursery() as nursery:
            await nursery.start(conn.serve)
            started = time.perf_counter()
            received = 0
            async with conn.open_call("bench.stream", count) as call:
                async for item in call:
                    received += len(item["data"])
                await call.result()
            elapsed = time.perf_counter() - started
            nursery.cancel_scope.cancel()
    assert received == count * CHUNK_BYTES, received
    return received / elapsed / 1e6


async def bulk_secure_up(port: int, count: int) -> float:
    frame = bytes(encode(Data(1, {"i": 0, "data": os.urandom(CHUNK_BYTES)})))
    async with open_secure_channel(Address(HOST, port), NodeKey.generate()) as channel:
        started = time.perf_counter()
        await channel.send_message(f"up {count}".encode())
        for _ in range(count):
            await channel.send_message(frame)
        assert await channel.receive_message() == b"done"
        elapsed = time.perf_counter() - started
    return count * CHUNK_BYTES / elapsed / 1e6


async def bulk_secure(port: int, count: int) -> float:
    async with open_secure_channel(Address(HOST, port), NodeKey.generate()) as channel:
        started = time.perf_counter()
        await channel.send_message(f"down {count}".encode())
        received = 0
        for _ in range(count):
            frame = decode(await channel.receive_message())
            assert isinstance(frame, Data)
            received += len(frame.body["data"])
        elapsed = time.perf_counter() - started
        await channel.send_message(b"done")
    assert received == count * CHUNK_BYTES, received
    return received / elapsed / 1e6


async def bulk_ws(port: int, count: int) -> float:
    async with trio.open_nursery() as nursery:
        ws = await connect_baseline(nursery, port)
        started = time.perf_counter()
        await ws.send_message(str(count))
        received = 0
        for _ in range(count):
            received += len(await ws.get_message())
        elapsed = time.perf_counter() - started
        await ws.send_message("done")
        await ws.aclose()
    assert received == count * CHUNK_BYTES, received
    return received / elapsed / 1e6


async def calls_per_second(port: int, in_flight: int) -> float:
    done = 0

    async def caller(conn: Connection, deadline: float) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await conn.call("bench.echo", {"n": done})
            done += 1

    async with open_secure_channel(Address(HOST, port), NodeKey.generate()) as channel:
        conn = Connection(channel, Registry(), everyone, initiator=True)
        async with trio.open_nursery() as nursery:
            await nursery.start(conn.serve)
            await conn.call("bench.echo", "warm up")
            started = time.perf_counter()
            async with trio.open_nursery() as callers:
                for _ in range(in_flight):
                    callers.start_soon(caller, conn, started + CALL_SECONDS)
            elapsed = time.perf_counter() - started
            nursery.cancel_scope.cancel()
    return done / elapsed


def proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measured(
    bulk: Callable[[int, int], Any], port: int, server_pid: int, count: int
) -> tuple[float, float, float]:
    """MB/s of one bulk round, and CPU microseconds per chunk in this client and in
    the server process over it."""
    mine, theirs = time.process_time(), proc_cpu_s(server_pid)
    rate = await bulk(port, count)
    mine, theirs = time.process_time() - mine, proc_cpu_s(server_pid) - theirs
    return rate, mine / count * 1e6, theirs / count * 1e6


async def run_client(
    bus_port: int, secure_port: int, ws_port: int, pids: str, gib: float, rounds: int
) -> None:
    count = int(gib * 1024**3) // CHUNK_BYTES
    bus_pid, secure_pid, ws_pid = (int(p) for p in pids.split(","))
    kinds = {
        "ws": (bulk_ws, ws_port, ws_pid),
        "secure": (bulk_secure, secure_port, secure_pid),
        "secure_up": (bulk_secure_up, secure_port, secure_pid),
        "bus": (bulk_bus, bus_port, bus_pid),
    }
    runs: dict[str, list[tuple[float, float, float]]] = {kind: [] for kind in kinds}
    for _ in range(rounds):
        for kind, (bulk, port, pid) in kinds.items():
            runs[kind].append(await measured(bulk, port, pid, count))
    calls = {str(n): await calls_per_second(bus_port, n) for n in (1, 64)}
    print(json.dumps({"bulk": runs, "calls": calls}), flush=True)


async def run_idle_client(port: int, connections: int) -> None:
    """Hold ``connections`` authenticated, served connections until stdin closes."""
    dialing = trio.CapacityLimiter(32)  # stay below the server's max_unauthenticated

    async def hold(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # A fresh key per connection: the server bounds connections per node.
        async with open_secure_channel(Address(HOST, port), NodeKey.generate()) as channel:
            conn = Connection(channel, Registry(), everyone, initiator=True)
            async with trio.open_nursery() as nursery:
                await nursery.start(conn.serve)
                await conn.call("bus.describe")
                task_status.started()

    async def open_one(holders: trio.Nursery) -> None:
        async with dialing:
            await holders.start(hold)

    async with trio.open_nursery() as holders:
        async with trio.open_nursery() as starting:
            for _ in range(connections):
                starting.start_soon(open_one, holders)
        print("READY", flush=True)
        await wait_for_stdin_close()
        holders.cancel_scope.cancel()


# --- orchestrator --------------------------------------------------------------------------


def spawn(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def read_line(proc: subprocess.Popen[str], prefix: str) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(prefix):
        raise SystemExit(f"helper process said {line!r}, expected {prefix!r}")
    return line[len(prefix) :].strip()


def stop(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit(f"no VmRSS for process {pid}")


def measure_idle(env: dict[str, str], connections: int) -> tuple[int, int]:
    server = spawn(env, "_bus-server")
    port = read_line(server, "PORT ")
    time.sleep(0.5)  # let start-up allocations settle before the baseline
    baseline = rss_kib(server.pid)
    client = spawn(env, "_idle-client", port, str(connections))
    try:
        read_line(client, "READY")
        time.sleep(1.0)
        held = rss_kib(server.pid)
    finally:
        stop(client)
        stop(server)
    return baseline, held


def orchestrate(args: argparse.Namespace) -> None:
    env = dict(os.environ)
    if not args.no_malloc_tuning:
        env.update(MALLOC_TUNING)
    servers = [spawn(env, mode) for mode in ("_bus-server", "_secure-server", "_ws-server")]
    try:
        ports = [read_line(server, "PORT ") for server in servers]
        pids = ",".join(str(server.pid) for server in servers)
        client = spawn(env, "_client", *ports, pids, str(args.gib), str(args.rounds))
        result = json.loads(read_line(client, ""))
        client.wait()
    finally:
        for server in servers:
            stop(server)
    baseline, held = measure_idle(env, args.idle)
    report(args, result, baseline, held)


def report(args: argparse.Namespace, result: dict[str, Any], baseline: int, held: int) -> None:
    bulk = {kind: [run[0] for run in runs] for kind, runs in result["bulk"].items()}
    median = {kind: statistics.median(rates) for kind, rates in bulk.items()}

    def rates(kind: str) -> str:
        return " ".join(f"{r:,.0f}" for r in bulk[kind])

    def cpu(kind: str, receiver_is_client: bool = True) -> tuple[str, str, str]:
        runs = result["bulk"][kind]
        client = statistics.median(run[1] for run in runs)
        server = statistics.median(run[2] for run in runs)
        receiver, sender = (client, server) if receiver_is_client else (server, client)
        return ("  CPU us per chunk, receiver | sender", f"{receiver:.0f} | {sender:.0f}", "")

    rows = [
        ("bulk, encrypted bus (MB/s)", f"{median['bus']:,.0f}", rates("bus")),
        cpu("bus"),
        ("bulk, secure channel alone (MB/s)", f"{median['secure']:,.0f}", rates("secure")),
        cpu("secure"),
        ("  the same, client -> server (MB/s)", f"{median['secure_up']:,.0f}", rates("secure_up")),
        cpu("secure_up", receiver_is_client=False),
        ("bulk, bare trio-websocket (MB/s)", f"{median['ws']:,.0f}", rates("ws")),
        cpu("ws"),
        ("bus / bare (goal >= 0.65)", f"{median['bus'] / median['ws']:.2f}x", ""),
        ("secure channel / bare", f"{median['secure'] / median['ws']:.2f}x", ""),
        ("bus / secure channel", f"{median['bus'] / median['secure']:.2f}x", ""),
        ("calls/s, 1 in flight", f"{result['calls']['1']:,.0f}", ""),
        ("calls/s, 64 in flight", f"{result['calls']['64']:,.0f}", ""),
        (
            f"server RSS growth, {args.idle} idle connections",
            f"{(held - baseline) / 1024:,.1f} MiB",
            f"baseline {baseline / 1024:,.1f} MiB -> {held / 1024:,.1f} MiB",
        ),
        ("  per connection", f"{(held - baseline) / args.idle:,.1f} KiB", ""),
    ]
    print(
        f"bench_bus: {args.gib:g} GiB x {args.rounds} rounds each, 256 KiB frames, loopback, "
        f"malloc tuning {'off' if args.no_malloc_tuning else 'on'}"
    )
    width = max(len(name) for name, _, _ in rows)
    for name, value, detail in rows:
        print(f"  {name:<{width}}  {value:>12}  {detail}")


MODES: dict[str, Callable[..., Any]] = {
    "_bus-server": lambda: trio.run(run_bus_server),
    "_secure-server": lambda: trio.run(run_secure_server),
    "_ws-server": lambda: trio.run(run_ws_server),
    "_client": lambda bus, secure, ws, pids, gib, rounds: trio.run(
        run_client, int(bus), int(secure), int(ws), pids, float(gib), int(rounds)
    ),
    "_idle-client": lambda port, n: trio.run(run_idle_client, int(port), int(n)),
}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in MODES:
        wsmask.install()  # as the node does: a client masks bulk frames with numpy
        MODES[sys.argv[1]](*sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=1.0, help="GiB per bulk round")
    parser.add_argument("--rounds", type=int, default=3, help="bulk rounds of each kind")
    parser.add_argument("--idle", type=int, default=500, help="idle connections to hold")
    parser.add_argument("--no-malloc-tuning", action="store_true")
    orchestrate(parser.parse_args())


if __name__ == "__main__":
    main()
