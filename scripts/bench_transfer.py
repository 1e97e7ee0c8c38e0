#!/usr/bin/env python3
"""Benchmark multi-source blob transfer between real hearthfile daemons, on loopback,
against bare trio-websocket and libtorrent measured in the same run.

Run from the repository (after scripts/test has built the virtual environment):

    .venv/bin/python scripts/bench_transfer.py [--size-mib 1024] [--rounds 3]
        [--dist-rounds 1] [--dir SCRATCH] [--no-libtorrent] [--busy] [--profile OUTDIR]
        [--keep] [--json]

Everything runs in a fresh scratch directory (``--dir``, default /var/tmp; it must be a
real disk, not tmpfs, since the stores write and flush there), removed at the end. Every
node runs ``hearthfile run`` with the default configuration (so every byte between
nodes is Noise-encrypted) plus a 0.3 s gossip interval and a trust section listing the
other nodes of its network as members. All nodes are driven through the CLI.

Phase 1, interleaved round by round (the order of the steps rotates every round, and
``sync`` runs before each step so one step's dirty pages are not flushed in the next):

- ``hf 1 src``: node F1 fetches a ``--size-mib`` random blob from its only holder S1.
- ``hf 3 src``: node F3 fetches the same blob from three holders H0, H1, H2 at once
  (two separate networks, so F1 cannot learn of H0..H2). Before each fetch the script
  waits until ``hearthfile whohas`` on the fetcher lists every holder.
  For both: timed ``get`` is the whole ``hearthfile get CID -o FILE`` process, spawn to
  exit (CLI start-up, the fetch into the store, the copy out to FILE on the scratch disk,
  not fsynced); timed ``fetch`` is the daemon's own span, from the CLI's connection
  (its ``peer.up`` event) to the ``transfer.done`` event, both stamped by the fetcher
  daemon: every chunk verified, written and committed (fsynced) in its store. The
  fetcher daemon's CPU (utime + stime from /proc) and resident memory (VmRSS sampled
  every 20 ms) are taken over the ``get``; ``hearthfile rm`` drops the blob afterwards.
- ``ws``: a bare, unencrypted trio-websocket server process sends the same file as
  256 KiB binary messages to a client process (1 MiB receive buffer) that discards
  them, server -> client as in a fetch; timed inside the client, request to last byte.
- ``floor``: the floor of this design in Python (``benchfloor.py``): a sender process
  reads the blob's chunks from S1's store as a source daemon does and sends each as one
  msgpack map, encrypted as the secure channel does, as one websocket message; a
  receiver process decrypts, unpacks, checks each chunk against its CID and writes it
  with the store's backend, then flushes once. No requests, credit, schedule or index:
  only what any fetch of this wire format into this store layout must pay. Timed inside
  the receiver, request to flush.
- ``lt 1 seed`` / ``lt 3 seed``: libtorrent (PyPI ``libtorrent``) moves the same file
  from 1 or 3 seeder processes to a leecher process: a v1 torrent with 256 KiB pieces,
  no trackers, DHT/LSD/UPnP/NAT-PMP/uTP off, seeders in seed mode, the leecher
  ``connect_peer``s each seeder on 127.0.0.1; timed in the leecher from adding the
  torrent to the finished state (every piece hash-checked and handed to the disk layer,
  not fsynced). Run inside ``unshare -n`` with only ``lo`` up when that works, else on
  the host's loopback (the report says which). When libtorrent cannot be imported, the
  script installs it into its own environment (``pip install libtorrent``; it is not a
  project dependency) and stops if that fails; ``--no-libtorrent`` skips it.
- ``hf push``: S1 pushes the blob to F1 (``hearthfile push CID --to F1``; F1 lists S1 as
  trusted), timed as S1's own span, from the CLI's connection to ``push.done``; CPU of
  F1 (receiver) and S1 (sender); F1 unpins and drops the blob afterwards.

``--busy``: phase 1 runs with a competing CPU-bound process (a Python busy loop) pinned
to CPU 0 throughout, to show how each system holds up on a machine that is doing other
work; its own CPU is not counted anywhere.

Reported per end against libtorrent: CPU seconds per GB at the receiver (the fetcher
daemon over the whole ``get``, which includes handing the blob to the CLI; libtorrent's
leecher) and at the sender (the source daemon; libtorrent's seeder).

Phase 2, distribution: the other daemons stop; S1 restarts as origin O of a new network
with four fresh fetchers D1..D4, each bootstrapping to O and to the fetchers started
before it (a full mesh). Each of ``--dist-rounds`` rounds, in alternating order: one
fetcher alone fetches the blob, and all four ``hearthfile get CID -o /dev/null`` are
spawned at once. Reported: the time until the last of the four exits against four times
the single fetch of the same round, and the origin's upload during the four fetches in
blob copies (the growth of the sum of ``bytes_out`` over O's connections in ``hearthfile
--json peers``, over the blob size). The fetchers drop the blob after each step and the
next step waits until gossip has caught up (every fetcher lists only O as a holder).

``--profile OUTDIR``: after phase 1, one more 1-source ``get`` runs while py-spy (from
the virtual environment) samples the fetcher and the source daemons (``py-spy record -f
raw --threads``), and after phase 2 one more round of four fetchers at once runs while it
samples one fetcher and the origin. Neither extra run counts in the figures. The raw
files go to OUTDIR; the busiest frames are printed (waits in epoll and idle worker
threads left out).

MB/s = 10^6 B/s, MB = 10^6 B. Absolute numbers swing up to 2x between runs on small
shared machines; compare the ratios, which are taken round by round (both sides of a
ratio measured in the same round) and summarized by their median.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio
from benchbase import (
    CHUNK_BYTES,
    HOST,
    create_cost_us,
    filesystem_of,
    load_average,
    run_checked,
    run_file_client,
    run_file_server,
    scratch,
    write_random,
)
from benchfloor import run_floor_client, run_floor_server

SCRIPT = os.path.abspath(__file__)
HF = [sys.executable, "-m", "hearthfile"]
START_TIMEOUT_S = 30.0
GOSSIP_TIMEOUT_S = 60.0
STEP_TIMEOUT_S = 900.0
RSS_SAMPLE_S = 0.02
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: Goals (from the design brief) checked in the report.
GOAL_VS_LT = 1.5
STRETCH_VS_LT = 2.0
GOAL_3_VS_1 = 0.9
#: ``get -o FILE`` and a push, each against the single-source fetch.
GOAL_OF_FETCH = 0.9
GOAL_RSS_MB = 150.0


# --- process probes ---------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, from /proc; 0.0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def status_kib(pid: int, key: str) -> int:
    """A ``kB`` field (VmRSS, VmHWM) of /proc/<pid>/status; 0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """Peak VmRSS of one process while the block runs, sampled from a thread, and
    the peak of its anonymous part (RssAnon: without file pages it maps)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = status_kib(pid, "VmRSS")
        self.peak_anon_kib = status_kib(pid, "RssAnon")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_S):
            self.peak_kib = max(self.peak_kib, status_kib(self.pid, "VmRSS"))
            self.peak_anon_kib = max(self.peak_anon_kib, status_kib(self.pid, "RssAnon"))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kib = max(self.peak_kib, status_kib(self.pid, "VmRSS"))


# --- libtorrent: seeders and a leecher as separate processes ----------------------------------


def lt_session(lt: Any) -> Any:
    settings = lt.default_settings()
    settings.update(
        {
            "listen_interfaces": f"{HOST}:0",
            "enable_dht": False,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "enable_outgoing_utp": False,
            "enable_incoming_utp": False,
            "allow_multiple_connections_per_ip": True,
            "alert_mask": lt.alert.category_t.error_notification,
        }
    )
    return lt.session(settings)


def lt_make_torrent(blob: Path, torrent: Path) -> None:
    """A v1 .torrent of ``blob`` with 256 KiB pieces and no trackers."""
    import libtorrent as lt

    with warnings.catch_warnings():  # the file_storage API is deprecated in 2.1, still works
        warnings.simplefilter("ignore", DeprecationWarning)
        files = lt.file_storage()
        lt.add_files(files, str(blob))
        maker = lt.create_torrent(files, CHUNK_BYTES, flags=lt.create_torrent.v1_only)
    lt.set_piece_hashes(maker, str(blob.parent))
    torrent.write_bytes(lt.bencode(maker.generate()))


def lt_seed(torrent: str, data_dir: str) -> None:
    """Seed until stdin says done (or closes); then report CPU and bytes uploaded."""
    import libtorrent as lt

    ses = lt_session(lt)
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(torrent)
    params.save_path = data_dir
    params.flags |= lt.torrent_flags.seed_mode
    handle = ses.add_torrent(params)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ses.listen_port() and time.monotonic() < deadline:
        time.sleep(0.01)
    cpu = time.process_time()
    print(f"PORT {ses.listen_port()}", flush=True)
    sys.stdin.readline()
    cpu = time.process_time() - cpu
    time.sleep(1.1)  # the session's upload counters tick once a second
    uploaded = handle.status().all_time_upload
    print(json.dumps({"cpu": cpu, "uploaded": uploaded}), flush=True)


def lt_leech(torrent: str, dl_dir: str, seeders: str) -> None:
    """Start ``seeders`` seeder processes, fetch the torrent from all; print one JSON line."""
    import libtorrent as lt

    data_dir = str(Path(torrent).parent)
    procs = [
        subprocess.Popen(
            [sys.executable, SCRIPT, "_lt-seed", torrent, data_dir],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(int(seeders))
    ]
    try:
        ports = [int(_read_line(p, "PORT ").split()[1]) for p in procs]
        ses = lt_session(lt)
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(torrent)
        params.save_path = dl_dir
        cpu, started = time.process_time(), time.perf_counter()
        handle = ses.add_torrent(params)
        for port in ports:
            handle.connect_peer((HOST, port))
        redialed = started
        while True:
            status = handle.status()
            if status.is_seeding or status.is_finished:
                break
            now = time.perf_counter()
            if now - started > STEP_TIMEOUT_S:
                raise SystemExit(f"libtorrent timed out at {status.progress:.3f}")
            if now - redialed > 2 and status.num_peers < len(ports):
                for port in ports:
                    handle.connect_peer((HOST, port))
                redialed = now
            time.sleep(0.005)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        peers = status.num_peers
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("done\n")
            proc.stdin.flush()
        seeds = [json.loads(_read_line(p, "{")) for p in procs]
        ses.remove_torrent(handle)
        size = sum(f.stat().st_size for f in Path(dl_dir).iterdir())
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "cpu": cpu,
                "seed_cpu": [s["cpu"] for s in seeds],
                "uploaded": [s["uploaded"] for s in seeds],
                "size": size,
                "peers_at_end": peers,
                "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            }
        ),
        flush=True,
    )


def _read_line(proc: subprocess.Popen[str], prefix: str) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(prefix):
            return line
    raise SystemExit(f"a helper exited without printing {prefix!r} (rc={proc.wait()})")


# --- nodes ------------------------------------------------------------------------------------


@dataclass
class Node:
    """One hearthfile home and its daemon."""

    name: str
    home: Path
    node_id: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def port(self) -> int:
        return int(json.loads((self.home / "daemon.json").read_text())["port"])


@dataclass
class Fetch:
    """One timed ``get`` on a fetcher daemon."""

    wall: float  #: spawn to exit of the CLI
    fetch: float  #: the daemon's span: CLI connected -> transfer.done
    cpu: float  #: the fetcher daemon's CPU seconds over the get
    source_cpu: float  #: all source daemons' CPU seconds over the get
    rss_kib: int  #: the fetcher daemon's peak VmRSS during the get
    shares: dict[str, int] = field(default_factory=dict)
    anon_kib: int = 0  #: the same peak, anonymous memory only (no mapped file pages)


class Bench:
    """The scratch directory, the environment and every process of one run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = dict(os.environ)
        self.procs: list[subprocess.Popen[Any]] = []

    def hf(self, node: Node, *args: str, timeout: float = STEP_TIMEOUT_S) -> str:
        """Run one CLI command to completion; its stdout, or exit with its stderr."""
        return run_checked(
            [*HF, "--home", str(node.home), *args],
            env=self.env,
            timeout=timeout,
            label=f"hearthfile --home {node.name} {' '.join(args)}",
        )

    def hf_json(self, node: Node, *args: str) -> Any:
        return json.loads(self.hf(node, "--json", *args))

    def events(self, node: Node) -> list[dict[str, Any]]:
        return [
            epoch_at(json.loads(line)) for line in self.hf(node, "--json", "events").splitlines()
        ]

    def new_node(self, name: str) -> Node:
        node = Node(name, self.root / name)
        node.home.mkdir(parents=True)
        self.hf(node, "init")
        node.node_id = self.hf(node, "id").strip()
        return node

    def configure(self, members: Sequence[Node], trusted: Sequence[Node] = ()) -> None:
        """Every node of the network lists the others as members (``trusted``: as
        trusted, so they may push to it)."""
        for node in members:
            trust = "".join(
                f"  {m.node_id}: {'trusted' if m in trusted else 'member'}\n"
                for m in members
                if m is not node
            )
            (node.home / "config.yaml").write_text(f"gossip:\n  interval_s: 0.3\ntrust:\n{trust}")

    def start(self, node: Node, *peers: Node) -> None:
        args = [*HF, "--home", str(node.home), "run"]
        args += ["--listen", f"{HOST}:0"]
        for peer in peers:
            args += ["--peer", f"{HOST}:{peer.port}"]
        with open(node.home / "daemon.log", "ab") as log:
            node.proc = subprocess.Popen(args, stdout=log, stderr=log, env=self.env)
        self.procs.append(node.proc)
        info = node.home / "daemon.json"
        wait_for(
            lambda: info.exists() and json.loads(info.read_text())["pid"] == node.pid,
            f"the daemon of {node.name} to listen",
            node,
            START_TIMEOUT_S,
        )

    def stop(self, node: Node) -> None:
        if node.proc is not None:
            _terminate(node.proc)
            self.procs.remove(node.proc)
            node.proc = None

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            _terminate(proc)
        self.procs.clear()

    def spawn_helper(self, *args: str, stdin: bool = False) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, SCRIPT, *args],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
            env=self.env,
        )
        self.procs.append(proc)
        return proc

    def run_helper(self, argv: list[str]) -> dict[str, Any]:
        """Run a helper to completion (tracked, so an interrupt kills it); its JSON line."""
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env
        )
        self.procs.append(proc)
        try:
            out, err = proc.communicate(timeout=STEP_TIMEOUT_S)
        finally:
            _terminate(proc)
            self.procs.remove(proc)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv[:4])}... failed: {err.strip()[-2000:]}")
        return dict(json.loads(out.strip().splitlines()[-1]))

    def holders_known(self, fetcher: Node, cid: str, holders: Sequence[Node]) -> bool:
        rows = self.hf_json(fetcher, "whohas", cid)
        return {h.node_id for h in holders} <= {r["node_id"] for r in rows}

    def timed_get(self, fetcher: Node, sources: Sequence[Node], cid: str, output: str) -> Fetch:
        """One ``get`` of ``cid`` by ``fetcher``, timed from outside and from its events."""
        os.sync()
        cpu0 = cpu_seconds(fetcher.pid)
        source_cpu0 = sum(cpu_seconds(s.pid) for s in sources)
        stamp, started = time.time(), time.perf_counter()
        with RssSampler(fetcher.pid) as rss:
            self.hf(fetcher, "get", cid, "-o", output)
        wall = time.perf_counter() - started
        cpu = cpu_seconds(fetcher.pid) - cpu0
        source_cpu = sum(cpu_seconds(s.pid) for s in sources) - source_cpu0
        fetch, shares = daemon_span(self.events(fetcher), fetcher.node_id, cid, stamp)
        return Fetch(wall, fetch, cpu, source_cpu, rss.peak_kib, shares, rss.peak_anon_kib)

    def timed_push(self, source: Node, target: Node, cid: str) -> Fetch:
        """One ``push`` of ``cid`` from ``source`` to ``target``; the same figures as
        ``timed_get``, with the pusher's span (CLI connected -> ``push.done``) as the
        transfer and the target's CPU as the receiver's."""
        os.sync()
        cpu0, source_cpu0 = cpu_seconds(target.pid), cpu_seconds(source.pid)
        stamp, started = time.time(), time.perf_counter()
        with RssSampler(target.pid) as rss:
            self.hf(source, "push", cid, "--to", target.node_id)
        wall = time.perf_counter() - started
        cpu, source_cpu = cpu_seconds(target.pid) - cpu0, cpu_seconds(source.pid) - source_cpu0
        span, _ = daemon_span(self.events(source), source.node_id, cid, stamp, "push.done")
        return Fetch(wall, span, cpu, source_cpu, rss.peak_kib)


def _terminate(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    """Ask ``proc`` to stop with ``sig``; kill it if it has not after ``timeout`` s."""
    if proc.poll() is None:
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # the baseline server stops on it
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def epoch_at(event: dict[str, Any]) -> dict[str, Any]:
    """The event with its ``at`` in seconds since the epoch (the CLI prints ISO 8601)."""
    if isinstance(event.get("at"), str):
        event["at"] = datetime.datetime.fromisoformat(event["at"]).timestamp()
    return event


def daemon_span(
    events: list[dict[str, Any]], me: str, cid: str, since: float, kind: str = "transfer.done"
) -> tuple[float, dict[str, int]]:
    """From a fetcher's (or pusher's) events: seconds from the CLI's connection (the
    ``peer.up`` of the node's own id, where the node reports one; else the command's
    start) to the ``kind`` event of ``cid``, and the chunks per source."""
    done = [e for e in events if e["event"] == kind and e.get("cid") == cid]
    done = [e for e in done if e["at"] >= since]
    if not done:
        raise SystemExit(f"no {kind} event for {cid} after the command")
    end = done[-1]["at"]
    ups = [
        e["at"]
        for e in events
        if e["event"] == "peer.up" and e.get("node_id") == me and since <= e["at"] <= end
    ]
    begin = ups[-1] if ups else since  # without it, the span includes the CLI's start
    shares = [e for e in events if e["event"] == "transfer.shares" and e.get("cid") == cid]
    got = {k: v for k, v in shares[-1]["shares"].items() if v} if shares else {}
    return end - begin, got


def wait_for(condition: Callable[[], Any], what: str, node: Node | None, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        exited = node is not None and node.proc is not None and node.proc.poll() is not None
        if exited or time.monotonic() > deadline:
            log = ""
            if node is not None and (node.home / "daemon.log").exists():
                log = (node.home / "daemon.log").read_text(errors="replace")[-2000:]
            raise SystemExit(f"timed out waiting for {what}\n{log}")
        time.sleep(0.2)


def rotate(round_no: int, steps: Sequence[Callable[[], None]]) -> None:
    """Run the steps, starting at a different one every round."""
    shift = round_no % len(steps)
    for step in [*steps[shift:], *steps[:shift]]:
        step()


# --- phase 1: one fetcher, 1 or 3 sources, against the baselines --------------------------------


@dataclass
class Setup:
    blob: Path
    size: int
    cid: str
    s1: Node
    f1: Node
    holders: list[Node]
    f3: Node


def set_up(bench: Bench, size: int) -> Setup:
    blob = bench.root / "blob" / "blob.bin"
    blob.parent.mkdir()
    write_random(blob, size)
    s1, f1 = bench.new_node("S1"), bench.new_node("F1")
    holders = [bench.new_node(f"H{i}") for i in range(3)]
    f3 = bench.new_node("F3")
    bench.configure([s1, f1], trusted=[s1])  # S1 may push to F1
    bench.configure([*holders, f3])
    cids = {bench.hf(h, "add", str(blob)).split()[-1] for h in [s1, *holders]}
    assert len(cids) == 1, cids
    cid = cids.pop()
    for holder in [s1, *holders]:
        bench.start(holder)
    bench.start(f1, s1)
    bench.start(f3, *holders)
    wait_for(lambda: bench.holders_known(f1, cid, [s1]), "F1 to learn S1", f1, GOSSIP_TIMEOUT_S)
    wait_for(
        lambda: bench.holders_known(f3, cid, holders),
        "F3 to learn H0..H2",
        f3,
        GOSSIP_TIMEOUT_S,
    )
    return Setup(blob, size, cid, s1, f1, holders, f3)


def unshare_works() -> bool:
    try:
        probe = subprocess.run(
            ["unshare", "-n", "sh", "-c", "ip link set lo up"],
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def libtorrent_version() -> str | None:
    try:
        import libtorrent as lt
    except ImportError:
        return None
    return str(lt.__version__)


def ensure_libtorrent() -> str:
    """libtorrent's version, installing PyPI ``libtorrent`` into this interpreter's
    environment first when it is missing (it is a benchmark tool, not a dependency).
    Exits when that fails: a run without the baseline must be asked for."""
    version = libtorrent_version()
    if version is not None:
        return version
    print("  installing libtorrent (pip install libtorrent)", file=sys.stderr, flush=True)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "libtorrent"],
        capture_output=True,
        text=True,
        check=False,
    )
    importlib.invalidate_caches()
    version = libtorrent_version()
    if version is None:
        raise SystemExit(
            "cannot install libtorrent (pip install libtorrent: "
            f"{(done.stderr or done.stdout).strip()[-500:]}); --no-libtorrent runs without it"
        )
    return version


@contextlib.contextmanager
def competing_load(enabled: bool) -> Iterator[str]:
    """With ``enabled``, a CPU-bound process spinning on CPU 0 for the whole block (a busy
    machine: every transfer shares that core with it); yields the report's note."""
    if not enabled:
        yield ""
        return
    spinner = subprocess.Popen(
        [sys.executable, "-c", "while True: pass"],
        preexec_fn=lambda: os.sched_setaffinity(0, {0}),
        stdin=subprocess.DEVNULL,
    )
    try:
        yield f"; a competing CPU-bound process on CPU 0 (pid {spinner.pid})"
    finally:
        _terminate(spinner, signal.SIGKILL)


def measure_phase1(bench: Bench, s: Setup, rounds: int, lt_mode: str | None) -> dict[str, Any]:
    r: dict[str, list[Any]] = defaultdict(list)
    out = bench.root / "out.bin"
    torrent = s.blob.parent / "blob.torrent"
    if lt_mode is not None:
        lt_make_torrent(s.blob, torrent)
    ws_server = bench.spawn_helper("_ws-server", str(s.blob), stdin=True)
    ws_port = int(_read_line(ws_server, "PORT ").split()[1])
    source_data = str(s.s1.home / "data")
    floor_server = bench.spawn_helper("_floor-server", source_data, s.cid, stdin=True)
    floor_port = int(_read_line(floor_server, "PORT ").split()[1])

    def hf(key: str, fetcher: Node, sources: list[Node]) -> Callable[[], None]:
        def step() -> None:
            wait_for(
                lambda: bench.holders_known(fetcher, s.cid, sources),
                f"{fetcher.name} to know every holder",
                fetcher,
                GOSSIP_TIMEOUT_S,
            )
            r[key].append(bench.timed_get(fetcher, sources, s.cid, str(out)))
            if out.stat().st_size != s.size:
                raise SystemExit(f"get wrote {out.stat().st_size} bytes, expected {s.size}")
            out.unlink()
            bench.hf(fetcher, "rm", s.cid)

        return step

    def baseline(key: str, server: subprocess.Popen[str], *args: str) -> Callable[[], None]:
        """A step timing one client helper against a running baseline server."""

        def step() -> None:
            os.sync()
            server_cpu = cpu_seconds(server.pid)
            told = bench.run_helper([sys.executable, SCRIPT, *args])
            told["server_cpu"] = cpu_seconds(server.pid) - server_cpu
            r[key].append(told)

        return step

    ws = baseline("ws", ws_server, "_ws-client", str(ws_port), "down", str(s.blob))
    floor_dir = str(bench.root / "floor-store")
    floor_args = ("_floor-client", str(floor_port), source_data, s.cid, floor_dir)
    floor = baseline("floor", floor_server, *floor_args)
    floor1_args = (*floor_args[:-1], str(bench.root / "floor-v1"), "v1")
    floor1 = baseline("floor1", floor_server, *floor1_args)

    def lt(seeders: int) -> Callable[[], None]:
        def step() -> None:
            dl = bench.root / "lt-dl"
            dl.mkdir()
            argv = [sys.executable, SCRIPT, "_lt-leech", str(torrent), str(dl), str(seeders)]
            if lt_mode == "unshare":
                argv = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *argv]
            os.sync()
            try:
                told = bench.run_helper(argv)
            finally:
                shutil.rmtree(dl, ignore_errors=True)
            if told["size"] != s.size:
                raise SystemExit(f"libtorrent wrote {told['size']} bytes, expected {s.size}")
            r[f"lt{seeders}"].append(told)

        return step

    def push() -> None:
        r["push1"].append(bench.timed_push(s.s1, s.f1, s.cid))
        bench.hf(s.f1, "unpin", s.cid)  # a received push is pinned
        bench.hf(s.f1, "rm", s.cid)

    steps = [ws, floor, floor1, hf("hf1", s.f1, [s.s1]), hf("hf3", s.f3, s.holders), push]
    if lt_mode is not None:
        steps += [lt(1), lt(3)]
    idle = {n.name: status_kib(n.pid, "VmRSS") for n in (s.f1, s.f3)}
    for i in range(rounds):
        rotate(i, steps)
        print(f"  round {i + 1}/{rounds} done", file=sys.stderr, flush=True)
    hwm = {n.name: status_kib(n.pid, "VmHWM") for n in (s.f1, s.f3)}
    _terminate(floor_server)  # it holds S1's store open, read-only
    return {"steps": r, "idle_rss_kib": idle, "hwm_kib": hwm}


@contextlib.contextmanager
def spying(bench: Bench, targets: list[tuple[Node, str]], outdir: Path) -> Iterator[dict[str, Any]]:
    """py-spy (from the virtual environment) samples each target daemon while the block
    runs; the summaries land in the yielded dict when it ends."""
    outdir.mkdir(parents=True, exist_ok=True)
    py_spy = str(Path(sys.executable).parent / "py-spy")
    spies = []
    for node, name in targets:
        path = outdir / f"{name}.txt"
        cmd = [py_spy, "record", "-p", str(node.pid), "-f", "raw", "-o", str(path), "--threads"]
        spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        bench.procs.append(spy)
        spies.append((spy, path, name))
    time.sleep(1.0)  # let py-spy attach
    result: dict[str, Any] = {"files": {}}
    try:
        yield result
    finally:
        for spy, path, name in spies:
            _terminate(spy, signal.SIGINT, 60)  # py-spy writes its file on SIGINT
            bench.procs.remove(spy)
            if path.exists():
                result["files"][name] = str(path)
                result[name] = summarize_raw(path)


def profile_fetch(bench: Bench, s: Setup, outdir: Path) -> dict[str, Any]:
    """One more 1-source get while py-spy samples the fetcher and the source daemons."""
    out = bench.root / "out.bin"
    os.sync()
    stamp = time.time()
    with spying(bench, [(s.f1, "fetcher-1src"), (s.s1, "source-1src")], outdir) as result:
        bench.hf(s.f1, "get", s.cid, "-o", str(out))
    result["what"] = "1-source fetch, get -o FILE"
    result["fetch_s"] = daemon_span(bench.events(s.f1), s.f1.node_id, s.cid, stamp)[0]
    out.unlink()
    bench.hf(s.f1, "rm", s.cid)
    return result


#: Leaf frames where a thread waits rather than works (py-spy's idle detection misses
#: some of them): trio's epoll wait and its worker threads waiting for a job.
IDLE_LEAVES = ("EpollIOManager.get_events ", "_thread_cache.py:211)", "Condition.wait ")


def summarize_raw(path: Path, top: int = 12) -> dict[str, Any]:
    """The busiest frames of a py-spy raw profile, waits left out: own samples, and
    samples under each hearthfile frame (inclusive)."""
    own: Counter[str] = Counter()
    under: Counter[str] = Counter()
    busy = idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = [f for f in stack.split(";") if not f.startswith("thread ")]
        if not frames or not count_text.isdigit():
            continue
        count = int(count_text)
        if any(x in frames[-1] + " " for x in IDLE_LEAVES):
            idle += count
            continue
        busy += count
        own[frames[-1]] += count
        for function in {f.rsplit(":", 1)[0] + ")" for f in frames if "(hearthfile/" in f}:
            under[function] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(f, round(100 * c / max(busy, 1), 1)) for f, c in counter.most_common(top)]

    return {"busy": busy, "idle": idle, "own_%": share(own), "under_%": share(under)}


# --- phase 2: one origin, four fetchers at once -------------------------------------------------


def measure_distribution(
    bench: Bench, s: Setup, rounds: int, profile: Path | None
) -> dict[str, Any]:
    for node in [s.f1, s.f3, *s.holders]:
        bench.stop(node)
        shutil.rmtree(node.home, ignore_errors=True)  # frees their copies of the blob
    bench.stop(s.s1)
    origin = s.s1
    fetchers = [bench.new_node(f"D{i}") for i in range(1, 5)]
    bench.configure([origin, *fetchers])
    bench.start(origin)
    for i, node in enumerate(fetchers):
        bench.start(node, origin, *fetchers[:i])
    everyone = {n.node_id for n in [origin, *fetchers]}
    for node in fetchers:
        wait_for(
            partial(connected_to_all, bench, node, everyone - {node.node_id}),
            f"{node.name} to connect to every other node",
            node,
            GOSSIP_TIMEOUT_S,
        )
    r: dict[str, list[Any]] = defaultdict(list)

    def settled() -> None:
        """Every fetcher lists the origin as the only holder again."""
        for node in fetchers:
            wait_for(
                partial(only_holder, bench, node, s.cid, origin),
                f"{node.name} to see only the origin holding the blob",
                node,
                GOSSIP_TIMEOUT_S,
            )

    def single(round_no: int) -> None:
        settled()
        fetcher = fetchers[round_no % len(fetchers)]
        r["single"].append(bench.timed_get(fetcher, [origin], s.cid, os.devnull))
        bench.hf(fetcher, "rm", s.cid)

    def swarm(spy: Path | None = None) -> None:
        settled()
        os.sync()
        with contextlib.ExitStack() as stack:
            if spy is not None:
                targets = [(fetchers[0], "fetcher-swarm"), (origin, "origin-swarm")]
                r["profile"].append(stack.enter_context(spying(bench, targets, spy)))
            together()

    def together() -> None:
        sent0 = origin_bytes_out(bench, origin)
        cpu0 = [cpu_seconds(n.pid) for n in fetchers]
        stamp, started = time.time(), time.perf_counter()
        with contextlib.ExitStack() as stack:
            samplers = [stack.enter_context(RssSampler(n.pid)) for n in fetchers]
            gets = [
                subprocess.Popen(
                    [*HF, "--home", str(n.home), "get", s.cid, "-o", os.devnull],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    env=bench.env,
                )
                for n in fetchers
            ]
            bench.procs.extend(gets)
            for proc in gets:
                _, err = proc.communicate(timeout=STEP_TIMEOUT_S)
                bench.procs.remove(proc)
                if proc.returncode != 0:
                    raise SystemExit(f"a swarm get failed: {err.decode(errors='replace')}")
            total = time.perf_counter() - started
        sent = origin_bytes_out(bench, origin, sent0)
        cpu = sum(cpu_seconds(n.pid) - c for n, c in zip(fetchers, cpu0, strict=True))
        spans, from_origin, chunks = [], 0, 0
        for node in fetchers:
            span, shares = daemon_span(bench.events(node), node.node_id, s.cid, stamp)
            spans.append(span)
            from_origin += shares.get(origin.node_id, 0)
            chunks += sum(shares.values())
        r["swarm"].append(
            {
                "total": total,
                "spans": spans,
                "rss_kib": max(x.peak_kib for x in samplers),
                "origin_bytes_out": sent,
                "origin_chunk_share": from_origin / max(chunks, 1),
                "fetchers_cpu": cpu,
            }
        )
        for node in fetchers:
            bench.hf(node, "rm", s.cid)

    for i in range(rounds):
        if i % 2 == 0:
            single(i)
            swarm()
        else:
            swarm()
            single(i)
        print(f"  distribution round {i + 1}/{rounds} done", file=sys.stderr, flush=True)
    if profile is not None:
        swarm(profile)  # an extra round, not in the figures
        r["profile"][0]["what"] = "4 fetchers at once, one of them and the origin"
        r["profile"][0]["fetch_s"] = r["swarm"].pop()["total"]
    return r


def connected_to_all(bench: Bench, node: Node, others: set[str]) -> bool:
    return {p["node_id"] for p in bench.hf_json(node, "peers")} >= others


def only_holder(bench: Bench, node: Node, cid: str, holder: Node) -> bool:
    return {x["node_id"] for x in bench.hf_json(node, "whohas", cid)} == {holder.node_id}


def origin_bytes_out(bench: Bench, origin: Node, before: dict[str, int] | None = None) -> Any:
    """Bytes sent per connection of the origin; with ``before``, the growth of the sum
    (connections that are new count from zero)."""
    now = {
        f"{p['node_id']} {p['remote']} {p['connected_since']}": int(p["bytes_out"])
        for p in bench.hf_json(origin, "peers")
    }
    if before is None:
        return now
    return sum(v - before.get(k, 0) for k, v in now.items())


# --- report -------------------------------------------------------------------------------------


def med(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def spread(values: Sequence[float], fmt: str = "{:,.0f}") -> str:
    return "-".join(fmt.format(v) for v in (min(values), max(values)))


def report(args: argparse.Namespace, root: Path, res: dict[str, Any]) -> list[str]:
    size: int = args.size_mib * 1024 * 1024
    gb = size / 1e9
    steps: dict[str, list[Any]] = res["phase1"]["steps"]
    rate: dict[str, list[float]] = {}

    def mbps(seconds: float) -> float:
        return size / seconds / 1e6

    lines = [
        f"bench_transfer: {args.size_mib} MiB blob, {args.rounds} rounds, loopback, "
        f"{os.cpu_count()} CPUs, scratch {filesystem_of(root)} "
        f"({res['create_us']:.0f} us to create a file); libtorrent "
        f"{res['lt_note']}{res['busy_note']}; load average {res['load_before']} -> "
        f"{res['load_after']}; took {res['took_s']:.0f} s",
        "MB/s: medians over rounds (range in brackets); CPU: s per GB moved, receiver | "
        "senders; RSS: peak during the transfer",
        "",
    ]
    table: list[tuple[str, ...]] = [("measure", "MB/s", "(range)", "CPU recv|send", "peak RSS")]

    def row(label: str, key: str, rates: list[float], cpu: str, rss: str) -> None:
        rate[key] = rates
        table.append((label, f"{med(rates):,.0f}", f"({spread(rates)})", cpu, rss))

    for key, label in (
        ("ws", "bare trio-websocket S->C, plain"),
        ("floor", "floor: wire + store, no protocol"),
        ("floor1", "floor, previous layout (file per chunk)"),
    ):
        runs = steps[key]
        row(
            label,
            key,
            [mbps(t["seconds"]) for t in runs],
            f"{med([t['cpu'] for t in runs]) / gb:.2f} | "
            f"{med([t['server_cpu'] for t in runs]) / gb:.2f}",
            f"{med([t['rss_kib'] for t in runs]) / 1000:.0f} MB",
        )
    for key, label in (("hf1", "1 source"), ("hf3", "3 sources")):
        got: list[Fetch] = steps[key]
        cpu = f"{med([f.cpu for f in got]) / gb:.2f} | {med([f.source_cpu for f in got]) / gb:.2f}"
        peak = f"{max(f.rss_kib for f in got) / 1000:.0f} MB"
        row(f"hearthfile get -o FILE, {label}", f"{key}_get", [mbps(f.wall) for f in got], "", "")
        row(f"hearthfile fetch into store, {label}", key, [mbps(f.fetch) for f in got], cpu, peak)
    pushes: list[Fetch] = steps["push1"]
    row(
        "hearthfile push to 1 node",
        "push1",
        [mbps(f.fetch) for f in pushes],
        f"{med([f.cpu for f in pushes]) / gb:.2f} | {med([f.source_cpu for f in pushes]) / gb:.2f}",
        f"{max(f.rss_kib for f in pushes) / 1000:.0f} MB",
    )
    for key, label in (("lt1", "1 seeder"), ("lt3", "3 seeders")):
        if key in steps:
            runs = steps[key]
            row(
                f"libtorrent {res['lt_version']}, {label}",
                key,
                [mbps(t["seconds"]) for t in runs],
                f"{med([t['cpu'] for t in runs]) / gb:.2f} | "
                f"{med([sum(t['seed_cpu']) for t in runs]) / gb:.2f}",
                f"{med([t['rss_kib'] for t in runs]) / 1000:.0f} MB",
            )
    lines += format_table(table)
    lines.append("")

    checks: list[tuple[str, ...]] = [("ratio, per round", "median", "(range)", "goal", "met")]

    def ratio(
        label: str, num: str, den: str, goal: str = "", ok: Callable[[float], bool] | None = None
    ) -> float:
        per_round = [a / b for a, b in zip(rate[num], rate[den], strict=True)]
        value = med(per_round)
        met = "" if ok is None else ("yes" if ok(value) else "NO")
        checks.append((label, f"{value:.2f}x", f"({spread(per_round, '{:.2f}')})", goal, met))
        return value

    def at_least(goal: float) -> Callable[[float], bool]:
        return lambda v: v >= goal

    if "lt1" in rate:
        ratio(
            "hf fetch 1 src / lt 1 seeder",
            "hf1",
            "lt1",
            f">= {GOAL_VS_LT}x (stretch {STRETCH_VS_LT}x)",
            at_least(GOAL_VS_LT),
        )
        ratio("floor / lt 1 seeder", "floor", "lt1", f"(hf's goal: >= {GOAL_VS_LT}x)")
        ratio("hf get -o FILE 1 src / lt 1 seeder", "hf1_get", "lt1")
        ratio("hf push / lt 1 seeder", "push1", "lt1")
        ratio("hf fetch 3 src / lt 3 seeders", "hf3", "lt3")
        ratio("lt 3 seeders / lt 1 seeder", "lt3", "lt1")
    ratio("hf get -o FILE / fetch, 1 src", "hf1_get", "hf1", f">= {GOAL_OF_FETCH}x",
          at_least(GOAL_OF_FETCH))  # fmt: skip
    ratio("hf push / fetch, 1 src", "push1", "hf1", f">= {GOAL_OF_FETCH}x", at_least(GOAL_OF_FETCH))
    ratio("hf fetch 3 src / 1 src", "hf3", "hf1", f">= {GOAL_3_VS_1}x", at_least(GOAL_3_VS_1))
    ratio("hf get 3 src / 1 src", "hf3_get", "hf1_get")
    ratio("hf fetch 1 src / bare websocket", "hf1", "ws", "~0.35-0.45x (notes)")
    ratio("hf fetch 1 src / floor", "hf1", "floor", f">= {GOAL_OF_FETCH}x", at_least(GOAL_OF_FETCH))
    ratio("floor / previous layout's floor", "floor", "floor1")
    ratio("floor / bare websocket", "floor", "ws")
    cpu1 = med([f.cpu for f in steps["hf1"]]) / gb
    cpu3 = med([f.cpu for f in steps["hf3"]]) / gb
    if "lt1" in steps:
        for end, hf_cpu, lt_cpu in (
            ("receiver", [f.cpu for f in steps["hf1"]], [t["cpu"] for t in steps["lt1"]]),
            (
                "sender",
                [f.source_cpu for f in steps["hf1"]],
                [sum(t["seed_cpu"]) for t in steps["lt1"]],
            ),
        ):
            hf_gb, lt_gb = med(hf_cpu) / gb, med(lt_cpu) / gb
            checks.append(
                (
                    f"CPU s/GB at the {end}, hf 1 src vs lt 1 seeder",
                    f"{hf_gb:.2f} vs {lt_gb:.2f}",
                    "",
                    "hf <= lt",
                    "yes" if hf_gb <= lt_gb else "NO",
                )
            )
    checks.append(("fetcher CPU s/GB, 3 src vs 1 src", f"{cpu3:.2f} vs {cpu1:.2f}", "", "", ""))
    peak = max(f.rss_kib for f in [*steps["hf1"], *steps["hf3"]]) / 1000
    anon = max(f.anon_kib for f in [*steps["hf1"], *steps["hf3"]]) / 1000
    checks.append(
        (
            "fetcher daemon peak RSS (anonymous part)",
            f"{peak:.0f} MB ({anon:.0f})",
            "",
            f"< {GOAL_RSS_MB:.0f} MB",
            "yes" if peak < GOAL_RSS_MB else "NO",
        )
    )
    lines += format_table(checks)
    dist = res.get("distribution")
    if dist:
        lines.append("")
        lines += distribution_table(dist, size)
    shares = [f.shares for f in steps["hf3"]]
    lines.append("")
    lines.append(
        "3-source shares (chunks per source, per round): "
        + "; ".join(" ".join(str(v) for v in sorted(s.values(), reverse=True)) for s in shares)
    )
    lines.append(
        f"fetcher idle RSS before the rounds: {res['phase1']['idle_rss_kib']}; VmHWM after: "
        f"{res['phase1']['hwm_kib']} (KiB)"
    )
    if "lt1" in steps:
        up = [[round(u / size, 2) for u in t["uploaded"]] for t in steps["lt3"]]
        lines.append(f"libtorrent 3-seeder uploads (blob copies per seeder, per round): {up}")
    return lines


def distribution_table(dist: dict[str, list[Any]], size: int) -> list[str]:
    gb = size / 1e9
    alone: list[Fetch] = dist["single"]
    swarm = dist["swarm"]
    totals = [w["total"] for w in swarm]
    per_round = [w["total"] / (4 * f.wall) for w, f in zip(swarm, alone, strict=True)]
    copies = [w["origin_bytes_out"] / size for w in swarm]
    share = [100 * w["origin_chunk_share"] for w in swarm]
    rows: list[tuple[str, ...]] = [
        ("distribution: 1 origin, 4 fetchers, get -o /dev/null", "median", "(range)", "goal"),
        ("one fetcher alone: get, s", f"{med([f.wall for f in alone]):.2f}", "", ""),
        ("one fetcher alone: fetch into store, s", f"{med([f.fetch for f in alone]):.2f}", "", ""),
        ("4 at once: until the last get exits, s", f"{med(totals):.2f}", "", ""),
        (
            "4 at once / 4x one alone (per round)",
            f"{med(per_round):.2f}x",
            f"({spread(per_round, '{:.2f}')})",
            "< 1x",
        ),
        (
            "origin upload for the 4, blob copies",
            f"{med(copies):.2f}",
            f"({spread(copies, '{:.2f}')})",
            "1 ideal, 4 worst",
        ),
        (
            "chunks the 4 took from the origin, %",
            f"{med(share):.0f}",
            f"({spread(share)})",
            "25 ideal",
        ),
        (
            "fetcher peak RSS, MB: alone | in the swarm",
            f"{max(f.rss_kib for f in alone) / 1000:.0f} | "
            f"{max(w['rss_kib'] for w in swarm) / 1000:.0f}",
            "",
            f"< {GOAL_RSS_MB:.0f}",
        ),
        (
            "fetcher CPU s/GB: alone | in the swarm",
            f"{med([f.cpu for f in alone]) / gb:.2f} | "
            f"{med([w['fetchers_cpu'] for w in swarm]) / (4 * gb):.2f}",
            "",
            "",
        ),
    ]
    return format_table(rows)


def profile_lines(prof: dict[str, Any]) -> list[str]:
    lines = ["", f"profile of: {prof['what']}, {prof['fetch_s']:.2f} s; raw: {prof['files']}"]
    for name in prof["files"]:
        p = prof[name]
        lines.append(f"{name}: {p['busy']} busy samples ({p['idle']} waiting, left out)")
        lines.append("  own time, % of busy samples:")
        lines += [f"  {pct:5.1f}  {frame}" for frame, pct in p["own_%"]]
        lines.append("  under each hearthfile function, % of busy samples:")
        lines += [f"  {pct:5.1f}  {frame}" for frame, pct in p["under_%"]]
    return lines


def format_table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for n, r in enumerate(rows):
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) if n else c.ljust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


# --- entry -----------------------------------------------------------------------------------


def orchestrate(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    res: dict[str, Any] = {"load_before": load_average()}
    lt_mode: str | None = None
    res["lt_version"] = None if args.no_libtorrent else ensure_libtorrent()
    if args.no_libtorrent:
        res["lt_note"] = "skipped (--no-libtorrent)"
    elif unshare_works():
        lt_mode, res["lt_note"] = "unshare", f"{res['lt_version']} inside unshare -n"
    else:
        lt_mode = "host"
        res["lt_note"] = f"{res['lt_version']} on the host loopback (unshare -n failed)"
    with scratch(args.dir, args.keep, "hearthfile-bench-transfer-") as root:
        res["create_us"] = create_cost_us(root)
        bench = Bench(root)
        try:
            setup = set_up(bench, args.size_mib * 1024 * 1024)
            print("  set up", file=sys.stderr, flush=True)
            with competing_load(args.busy) as res["busy_note"]:
                res["phase1"] = measure_phase1(bench, setup, args.rounds, lt_mode)
            profile = Path(args.profile).absolute() if args.profile else None
            if profile is not None:
                res["profiles"] = [profile_fetch(bench, setup, profile)]
            if args.dist_rounds:
                res["distribution"] = measure_distribution(bench, setup, args.dist_rounds, profile)
                res["profiles"] = res.get("profiles", []) + res["distribution"].pop("profile", [])
        finally:
            bench.stop_all()
        res["load_after"] = load_average()
        res["took_s"] = time.perf_counter() - started
        lines = report(args, root, res)
    print("\n".join(lines))
    for prof in res.get("profiles", []):
        print("\n".join(profile_lines(prof)))
    if args.json:
        print(json.dumps(res, default=lambda o: o.__dict__))


MODES: dict[str, Callable[..., None]] = {
    "_ws-server": lambda path: trio.run(run_file_server, path),
    "_ws-client": lambda port, way, path: trio.run(run_file_client, int(port), way, path),
    "_floor-server": lambda data_dir, cid: trio.run(run_floor_server, data_dir, cid),
    "_floor-client": lambda port, source, cid, out, layout="v2": trio.run(
        run_floor_client, int(port), source, cid, out, layout
    ),
    "_lt-seed": lt_seed,
    "_lt-leech": lt_leech,
}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in MODES:
        MODES[sys.argv[1]](*sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the blob")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of phase 1")
    parser.add_argument(
        "--dist-rounds", type=int, default=1, help="rounds of phase 2 (4 fetches each)"
    )
    parser.add_argument("--dir", help="scratch parent on a real disk (default /var/tmp)")
    parser.add_argument("--no-libtorrent", action="store_true", help="skip libtorrent")
    parser.add_argument("--profile", metavar="OUTDIR", help="py-spy extra fetches")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument(
        "--busy", action="store_true", help="phase 1 with a CPU-bound process on CPU 0"
    )
    parser.add_argument("--json", action="store_true", help="also print every figure as JSON")
    args = parser.parse_args()
    orchestrate(args)


if __name__ == "__main__":
    main()
