#!/usr/bin/env python3
"""Benchmark the blob store against baselines measured in the same run.

Run from the repository (after scripts/test has built the virtual environment):

    .venv/bin/python scripts/bench_store.py [--size-mib 1024] [--files 20000]
        [--blobs 100000] [--rounds 3] [--big-rounds 3] [--lookups 20000]
        [--gc-budget 90] [--dir SCRATCH] [--only add,small,index] [--cold]
        [--prefault] [--keep]

Defaults take about 5-7 minutes on 2 cores.

Three parts, each timed against a baseline doing comparable work on the same disk,
the two alternating round by round (A, B, A, B...); every figure is the median over
the rounds and every ratio is the median of the per-round ratios:

1. add: ``hearthfile add`` of one ``--size-mib`` random file (a real CLI process,
   fresh HEARTHFILE_HOME each round; durable when it returns) against ``cp`` of the
   file followed by ``sync``, against the same bytes written as 256 KiB chunk files
   (no hashing, no index) followed by ``sync``, and against BLAKE3 of the file
   (one process, 1 MiB reads). Also the add process's CPU time (wait4 rusage) and
   peak RSS (from /usr/bin/time when present).
2. small: ``--files`` files of 4 KiB through as few ``hearthfile add`` calls as
   ARG_MAX allows, against ``cp -r`` of their directory followed by ``sync``.
3. index: a store of ``--blobs`` small blobs built through the Python API; then
   ``hearthfile ls`` against ``find`` over the blobs directory, ``has_blob`` per call
   against ``os.stat`` of a file, ``gc()`` with nothing to evict against the same
   ``find`` (a full scan), and ``gc()`` evicting ~10% (capacity set to the bytes
   held, threshold 0.95, target 0.9) against unlinking as many files plus ``sync``.
   Evicted blobs are replaced between rounds so each round starts from ``--blobs``;
   eviction rounds stop once they have taken ``--gc-budget`` seconds in all.

The scratch directory (``--dir``, default a temporary directory beside the
repository) must be on the disk under test, not tmpfs; stores live inside it.

Page cache: the source files are written by this script and stay in the page
cache (reported in the output) unless ``--cold`` drops them with
``posix_fadvise(DONTNEED)`` before each run. Each run's output is deleted right
after it, so the next run writes into recently freed pages. On virtual machines
that hand freed guest memory back to the host, writing into pages that were
handed back costs several times more than writing into recently used ones;
``--prefault`` touches and frees an anonymous mapping a little larger than each
write-heavy run before it starts, so every run starts alike (slower overall:
the touching itself pays for the handed-back pages).
"""

from __future__ import annotations

import argparse
import io
import mmap
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parent.parent

try:
    from hearthfile.blobs.store import BlobStore
    from hearthfile.cids import Cid
except ImportError:  # started with a python that lacks the project: use the repo's venv
    venv_python = REPO / ".venv" / "bin" / "python"
    if venv_python.exists() and Path(sys.prefix).resolve() != venv_python.parent.parent.resolve():
        os.execv(str(venv_python), [str(venv_python), __file__, *sys.argv[1:]])
    raise

T = TypeVar("T")
MIB = 1024 * 1024
MB = 1_000_000
CHUNK_BYTES = 256 * 1024
SMALL_FILE_BYTES = 4096
TIME_BIN = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None

HASH_CODE = """
import sys, blake3
h = blake3.blake3()
buf = bytearray(1 << 20)
view = memoryview(buf)
with open(sys.argv[1], "rb", buffering=0) as f:
    while n := f.readinto(buf):
        h.update(view[:n])
print(h.hexdigest())
"""

CHUNK_FILES_CODE = """
import os, sys
src, root = sys.argv[1], sys.argv[2]
buf = bytearray(256 * 1024)
view = memoryview(buf)
for shard in range(256):
    os.makedirs(f"{root}/{shard:02x}", exist_ok=True)
fd_in = os.open(src, os.O_RDONLY)
i = 0
while n := os.readv(fd_in, [buf]):
    fd = os.open(f"{root}/{i % 256:02x}/{i:08d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, view[:n])
    os.close(fd)
    i += 1
os.sync()
"""


class BenchError(Exception):
    pass


@dataclass(frozen=True)
class Proc:
    seconds: float
    user_seconds: float
    sys_seconds: float
    max_rss: int  # bytes

    @property
    def cpu_seconds(self) -> float:
        return self.user_seconds + self.sys_seconds


@dataclass
class Row:
    """One line of the table: hearthfile against a baseline, per round."""

    label: str
    unit: str  # "MB/s", "files/s", "s", "us", "MB"
    baseline: str
    higher_is_better: bool
    goal: str = ""
    ours: list[float] = field(default_factory=list)
    theirs: list[float] = field(default_factory=list)
    check: Callable[[Row], bool] | None = None
    note: str = ""

    def add(self, ours: float, theirs: float) -> None:
        self.ours.append(ours)
        self.theirs.append(theirs)

    def ratios(self) -> list[float]:
        return [o / t for o, t in zip(self.ours, self.theirs, strict=True)]

    def ratio(self) -> float:
        return statistics.median(self.ratios())

    def median(self) -> float:
        return statistics.median(self.ours)

    def met(self) -> str:
        if self.check is None or not self.ours:
            return ""
        return "yes" if self.check(self) else "NO"


# -- processes and memory ---------------------------------------------------------------


def run(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stdout: Path | None = None,
) -> Proc:
    """Run a process to completion; its wall time, CPU time and peak RSS.

    Peak RSS comes from /usr/bin/time when present: a process started straight
    from this one would report this process's own peak (Linux carries the
    pre-exec high-water mark of a vfork-ed child into its ru_maxrss).
    """
    with tempfile.NamedTemporaryFile() as err, tempfile.NamedTemporaryFile() as rss_file:
        wrapped = list(argv)
        if TIME_BIN is not None:
            wrapped = [TIME_BIN, "-f", "%M", "-o", rss_file.name, *wrapped]
        else:
            Path("/proc/self/clear_refs").write_text("5")  # reset our own peak RSS
        with open(stdout or os.devnull, "wb") as out:
            start = time.perf_counter()
            proc = subprocess.Popen(wrapped, env=env, cwd=cwd, stdout=out, stderr=err)
            _, status, usage = os.wait4(proc.pid, 0)
            seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            detail = Path(err.name).read_text(errors="replace").strip()[-2000:]
            raise BenchError(f"{argv[0]} exited with {proc.returncode}: {detail}")
        max_rss_kib = usage.ru_maxrss
        if TIME_BIN is not None:
            max_rss_kib = int(Path(rss_file.name).read_text().split()[-1])
    return Proc(seconds, usage.ru_utime, usage.ru_stime, max_rss_kib * 1024)


def hearthfile_cli() -> list[str]:
    script = Path(sys.executable).parent / "hearthfile"
    return [str(script)] if script.exists() else [sys.executable, "-m", "hearthfile"]


def cli_env(home: Path) -> dict[str, str]:
    """The environment of a CLI run against ``home``, created (``hearthfile init``,
    untimed) if it does not exist: local commands need a node home."""
    env = dict(os.environ)
    env["HEARTHFILE_HOME"] = str(home)
    if not home.exists():
        subprocess.run([*hearthfile_cli(), "init"], env=env, check=True, capture_output=True)
    return env


class Prefaulter:
    """Touch then free an anonymous mapping, so the next run gets recently used pages."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._zeros = bytes(MIB)

    def __call__(self, nbytes: int) -> None:
        os.sync()
        if not self.enabled or nbytes <= 0:
            return
        size = -(-nbytes // MIB) * MIB
        with mmap.mmap(-1, size) as m:
            for offset in range(0, size, MIB):
                m[offset : offset + MIB] = self._zeros


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cached_fraction(path: Path) -> str:
    """How much of the file is in the page cache, from fincore(1) when present."""
    if shutil.which("fincore") is None:
        return "unknown (no fincore)"
    out = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES,SIZE", str(path)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if len(out) != 2 or not out[1].isdigit() or int(out[1]) == 0:
        return "unknown"
    return f"{100 * int(out[0]) / int(out[1]):.0f}%"


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def fs_description(path: Path) -> str:
    """Filesystem type and source of the mount holding ``path`` (from mountinfo)."""
    best: tuple[int, str] = (-1, "unknown")
    real = str(path.resolve())
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields_ = line.split()
            mount_point = fields_[4]
            sep = fields_.index("-")
            fstype, source = fields_[sep + 1], fields_[sep + 2]
            inside = real == mount_point or real.startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) > best[0]:
                best = (len(mount_point), f"{fstype} on {source} (mounted at {mount_point})")
    return best[1]


def write_random_file(path: Path, nbytes: int) -> None:
    with open(path, "wb") as f:
        left = nbytes
        while left:
            piece = min(left, MIB)
            f.write(os.urandom(piece))
            left -= piece
        f.flush()
        os.fsync(f.fileno())


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- part 1: one large file -------------------------------------------------------------


def bench_add(args: argparse.Namespace, scratch: Path, prefault: Prefaulter) -> list[Row]:
    size = args.size_mib * MIB
    src = scratch / "big.bin"
    log(f"[add] writing a {args.size_mib} MiB random file")
    write_random_file(src, size)
    if args.cold:
        drop_cache(src)
    cache_state = cached_fraction(src)
    home, copy, chunk_dir = scratch / "home-big", scratch / "big-copy.bin", scratch / "chunks"
    cli = hearthfile_cli()

    cp = Row(f"add {args.size_mib} MiB file", "MB/s", "cp + sync", True, ">= 0.7x")
    cp.check = lambda r: r.ratio() >= 0.7
    files = Row(f"add {args.size_mib} MiB file", "MB/s", "256 KiB chunk files + sync", True)
    hashing = Row(f"add {args.size_mib} MiB file", "MB/s", "BLAKE3 of the file", True)
    cpu = Row("add, CPU per GiB", "s", "BLAKE3 of the file, CPU", False)
    cpu_cp = Row("add, CPU per GiB", "s", "cp + sync, CPU", False)
    rss = Row("add, peak RSS", "MB", "BLAKE3 process RSS", False, "< 100 MB")
    rss.check = lambda r: max(r.ours) < 100
    gib = size / (1 << 30)

    add_user: list[float] = []
    add_sys: list[float] = []
    for rnd in range(args.big_rounds):
        log(f"[add] round {rnd + 1}/{args.big_rounds}")
        runs: dict[str, Proc] = {}
        for name in ("hash", "add", "cp", "files"):
            if args.cold:
                drop_cache(src)
            prefault(int(size * 1.25) if name != "hash" else 0)
            if name == "hash":
                out = scratch / "hash.out"
                runs[name] = run([sys.executable, "-c", HASH_CODE, str(src)], stdout=out)
                digest = out.read_text().strip()
            elif name == "add":
                out = scratch / "add.out"
                runs[name] = run([*cli, "add", str(src)], env=cli_env(home), stdout=out)
                cids = out.read_text().split()
                if len(cids) != 1:
                    raise BenchError(f"hearthfile add printed {cids!r}")
                if rnd == 0:  # the store holds what was hashed
                    with BlobStore(home / "data") as store:
                        content = store.stat(Cid(cids[0])).content
                    if content != "blake3:" + digest:
                        raise BenchError(f"stored content {content} != BLAKE3 {digest}")
                remove(home)
            elif name == "cp":
                runs[name] = run(["sh", "-c", 'cp "$0" "$1" && sync', str(src), str(copy)])
                remove(copy)
            else:
                runs[name] = run([sys.executable, "-c", CHUNK_FILES_CODE, str(src), str(chunk_dir)])
                remove(chunk_dir)
        rate = {k: size / p.seconds / MB for k, p in runs.items()}
        cp.add(rate["add"], rate["cp"])
        files.add(rate["add"], rate["files"])
        hashing.add(rate["add"], rate["hash"])
        cpu.add(runs["add"].cpu_seconds / gib, runs["hash"].cpu_seconds / gib)
        cpu_cp.add(runs["add"].cpu_seconds / gib, runs["cp"].cpu_seconds / gib)
        rss.add(runs["add"].max_rss / MB, runs["hash"].max_rss / MB)
        log("[add]   " + ", ".join(f"{k} {v:,.0f} MB/s" for k, v in rate.items()))
        add_user.append(runs["add"].user_seconds / gib)
        add_sys.append(runs["add"].sys_seconds / gib)
    remove(src)
    cp.note = f"source file in page cache: {cache_state}" + (
        " (dropped with fadvise before each run)" if args.cold else ""
    )
    cpu.note = (
        f"user {statistics.median(add_user):.2f} s + system {statistics.median(add_sys):.2f} s"
        " (medians; system time is mostly copying into new page-cache pages)"
    )
    return [cp, files, hashing, cpu, cpu_cp, rss]


# -- part 2: many small files ------------------------------------------------------------


def split_argv(fixed: list[str], names: list[str], env: dict[str, str]) -> list[list[str]]:
    """Group names into as few argument lists as ARG_MAX allows (with headroom)."""
    limit = os.sysconf("SC_ARG_MAX")
    env_bytes = sum(len(k) + len(v) + 2 + 8 for k, v in env.items())
    budget = limit - env_bytes - 64 * 1024 - sum(len(a) + 1 + 8 for a in fixed)
    groups: list[list[str]] = [[]]
    used = 0
    for name in names:
        cost = len(os.fsencode(name)) + 1 + 8
        if used + cost > budget and groups[-1]:
            groups.append([])
            used = 0
        groups[-1].append(name)
        used += cost
    return groups


def bench_small(args: argparse.Namespace, scratch: Path, prefault: Prefaulter) -> list[Row]:
    src = scratch / "small"
    src.mkdir()
    log(f"[small] writing {args.files} files of {SMALL_FILE_BYTES} B")
    names = [f"f{i:06d}" for i in range(args.files)]
    for name in names:
        (src / name).write_bytes(os.urandom(SMALL_FILE_BYTES))
    os.sync()
    home, copy = scratch / "home-small", scratch / "small-copy"
    cli = hearthfile_cli()
    groups = split_argv([*cli, "add"], names, cli_env(home))
    arg_bytes = sum(len(n) + 1 + 8 for n in names)
    calls = (
        f"{len(groups)} hearthfile add call{'s' if len(groups) > 1 else ''} "
        f"(argv {arg_bytes / MIB:.2f} MiB, ARG_MAX {os.sysconf('SC_ARG_MAX') / MIB:.0f} MiB)"
    )
    row = Row(
        f"add {args.files} x 4 KiB files", "files/s", "cp -r + sync", True, ">= 5,000/s, >= 1x"
    )
    row.check = lambda r: r.median() >= 5000 and r.ratio() >= 1
    row.note = calls
    expected_write = args.files * 3 * SMALL_FILE_BYTES  # pack, index and WAL, roughly
    for rnd in range(args.rounds):
        log(f"[small] round {rnd + 1}/{args.rounds}")
        prefault(expected_write)
        out = scratch / "small-add.out"
        seconds = 0.0
        printed = 0
        for group in groups:
            seconds += run([*cli, "add", *group], env=cli_env(home), cwd=src, stdout=out).seconds
            printed += len(out.read_text().split())
        if printed != args.files:
            raise BenchError(f"hearthfile add printed {printed} CIDs for {args.files} files")
        prefault(expected_write)
        base = run(["sh", "-c", 'cp -r "$0" "$1" && sync', str(src), str(copy)]).seconds
        remove(home)
        remove(copy)
        row.add(args.files / seconds, args.files / base)
    remove(src)
    return [row]


# -- part 3: a large index ---------------------------------------------------------------


def add_random_blobs(store: BlobStore, count: int, start: int) -> list[Cid]:
    cids: list[Cid] = []
    batch = store.batch()
    for i in range(count):
        payload = os.urandom(random.randint(256, 4096))
        cids.append(store.add_stream(io.BytesIO(payload), name=f"b{start + i}", batch=batch).cid)
        if (i + 1) % 5000 == 0:
            batch.commit()
            batch = store.batch()
    batch.commit()
    return cids


def blob_path(data: Path, cid: str) -> str:
    """Where a file per blob would be (these blobs are small: the store packs them)."""
    hexpart = cid.removeprefix("blake3:")
    return f"{data}/blobs/{hexpart[:2]}/{hexpart}"


def per_call_us(fn: Callable[[T], object], items: Sequence[T]) -> float:
    start = time.perf_counter()
    for item in items:
        fn(item)
    return (time.perf_counter() - start) / len(items) * 1e6


def bench_index(args: argparse.Namespace, scratch: Path, prefault: Prefaulter) -> list[Row]:
    home = scratch / "home-index"
    data = home / "data"
    empty_home = scratch / "home-empty"
    cli = hearthfile_cli()
    log(f"[index] building a store of {args.blobs} blobs through the API")
    start = time.perf_counter()
    with BlobStore(data) as store:
        cids = add_random_blobs(store, args.blobs, 0)
    os.sync()
    build = time.perf_counter() - start
    next_name = args.blobs

    listing = scratch / "ls.out"
    run([*cli, "ls"], env=cli_env(home), stdout=listing)  # check, and warm the cache
    listed = len(listing.read_text().splitlines())
    if listed != args.blobs:
        raise BenchError(f"hearthfile ls listed {listed} blobs, expected {args.blobs}")
    listing.unlink()

    startup = Row("CLI start (ls, empty store)", "s", "python -c pass", False)
    ls = Row(f"ls, {args.blobs} blobs", "s", "ls, empty store", False, "< 0.5 s")
    ls.check = lambda r: r.median() < 0.5
    stat_cli = Row("stat CID (CLI)", "s", "python -c pass", False, "< 0.5 s")
    stat_cli.check = lambda r: r.median() < 0.5
    has_yes = Row("has_blob, present", "us", "os.stat of the index", False, "< 0.5 s")
    has_no = Row("has_blob, absent", "us", "os.stat, absent file", False, "< 0.5 s")
    has_yes.check = has_no.check = lambda r: r.median() < 0.5e6
    noop = Row("gc, nothing to evict", "s", "find data/ (full scan)", False, "< 0.5 s")
    noop.check = lambda r: r.median() < 0.5
    evict = Row("gc, evict ~10%", "s", "unlink a file per blob + sync", False, "< 0.5 s")
    evict.check = lambda r: r.median() < 0.5
    evicted_counts: list[int] = []
    evict_spent = 0.0
    lookups = min(args.lookups, len(cids))

    for rnd in range(args.rounds):
        log(f"[index] round {rnd + 1}/{args.rounds}")
        empty = run([*cli, "ls"], env=cli_env(empty_home)).seconds
        startup.add(empty, run([sys.executable, "-c", "pass"]).seconds)
        ours = run([*cli, "ls"], env=cli_env(home)).seconds
        scan = run(["find", str(data)]).seconds
        ls.add(ours, empty)
        ours = run([*cli, "stat", random.choice(cids)], env=cli_env(home)).seconds
        stat_cli.add(ours, run([sys.executable, "-c", "pass"]).seconds)

        with BlobStore(data, max_store_bytes=1 << 60) as store:
            present = random.sample(cids, lookups)
            absent = [Cid("blake3:" + os.urandom(32).hex()) for _ in range(lookups)]
            present_paths = [str(data / "index.sqlite3")] * len(present)
            absent_paths = [blob_path(data, c) for c in absent]
            has_yes.add(per_call_us(store.has_blob, present), per_call_us(os.stat, present_paths))
            has_no.add(
                per_call_us(store.has_blob, absent), per_call_us(os.path.exists, absent_paths)
            )
            if not all(map(store.has_blob, present)) or any(map(store.has_blob, absent)):
                raise BenchError("has_blob answered wrong")
            start = time.perf_counter()
            report = store.gc()
            noop.add(time.perf_counter() - start, scan)
            if report.blobs_removed:
                raise BenchError("gc evicted blobs with room to spare")
            held = store.total_bytes()

        if rnd > 0 and evict_spent > args.gc_budget:
            continue
        with BlobStore(data, max_store_bytes=held, gc_threshold=0.95, gc_target=0.9) as store:
            prefault(0)
            start = time.perf_counter()
            report = store.gc()
            seconds = time.perf_counter() - start
            evict_spent += seconds
            removed = len(report.blobs_removed)
            if removed == 0:
                raise BenchError("gc evicted nothing over its threshold")
            evicted_counts.append(removed)
            gone = set(report.blobs_removed)
            cids = [c for c in cids if c not in gone]
            log(f"[index] evicted {removed} blobs in {seconds:.2f} s; baseline and refill")
            evict.add(seconds, unlink_baseline(scratch / "unlink", removed))
            cids += add_random_blobs(store, removed, next_name)
            next_name += removed
        os.sync()

    per_pass = statistics.median(evicted_counts)
    evict.note = f"{per_pass:.0f} blobs per pass, {len(evict.ours)} of "
    evict.note += f"{args.rounds} rounds"
    if len(evict.ours) < args.rounds:
        evict.note += f" (stopped past --gc-budget {args.gc_budget:.0f} s)"
    ls.note = f"store built through the API at {args.blobs / build:,.0f} blobs/s"
    remove(home)
    remove(empty_home)
    return [startup, ls, stat_cli, has_yes, has_no, noop, evict]


def unlink_baseline(root: Path, count: int) -> float:
    """Seconds to unlink ``count`` small files spread over 256 directories, then sync."""
    paths = []
    for shard in range(256):
        (root / f"{shard:02x}").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        path = f"{root}/{i % 256:02x}/{i:08d}"
        with open(path, "wb") as f:
            f.write(os.urandom(random.randint(256, 4096)))
        paths.append(path)
    os.sync()
    start = time.perf_counter()
    for path in paths:
        os.unlink(path)
    os.sync()
    seconds = time.perf_counter() - start
    shutil.rmtree(root)
    return seconds


# -- output -------------------------------------------------------------------------------


def fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "us":
        return f"{value:.1f} us"
    if unit == "MB":
        return f"{value:.0f} MB"
    return f"{value:,.0f} {unit}"


def print_table(rows: list[Row]) -> None:
    header = (
        "measure",
        "hearthfile",
        "baseline",
        "baseline value",
        "ratio",
        "rounds",
        "goal",
        "met",
    )
    lines = [
        (
            r.label,
            fmt(r.median(), r.unit),
            r.baseline,
            fmt(statistics.median(r.theirs), r.unit),
            f"{r.ratio():.2f}x",
            f"{min(r.ratios()):.2f}-{max(r.ratios()):.2f}",
            r.goal,
            r.met(),
        )
        for r in rows
        if r.ours
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines, strict=True)]
    for i, line in enumerate([header, *lines]):
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    notes = [f"- {r.label} vs {r.baseline}: {r.note}" for r in rows if r.ours and r.note]
    if notes:
        print()
        print("\n".join(notes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="large file size (1024)")
    parser.add_argument("--files", type=int, default=20000, help="small files to add (20000)")
    parser.add_argument("--blobs", type=int, default=100000, help="blobs in the index (100000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, small and index (3)")
    parser.add_argument("--big-rounds", type=int, default=3, help="rounds, large file (3)")
    parser.add_argument("--lookups", type=int, default=20000, help="has_blob calls per kind")
    parser.add_argument(
        "--gc-budget",
        type=float,
        default=90.0,
        help="stop eviction rounds once they have taken this many seconds (90)",
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help="scratch parent directory (default: repo's parent)"
    )
    parser.add_argument("--only", default="add,small,index", help="parts to run")
    parser.add_argument("--cold", action="store_true", help="drop the source from the cache")
    parser.add_argument(
        "--prefault", action="store_true", help="touch and free memory before each write run"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(parts) - {"add", "small", "index"}
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}")

    parent = args.dir or REPO.parent
    parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="hearthfile-bench-", dir=parent))
    where = fs_description(scratch)
    if where.startswith("tmpfs"):
        log(f"warning: {scratch} is on tmpfs; pick a directory on a disk with --dir")
    prefault = Prefaulter(args.prefault)
    rows: list[Row] = []
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    try:
        if "add" in parts:
            rows += bench_add(args, scratch, prefault)
        if "small" in parts:
            rows += bench_small(args, scratch, prefault)
        if "index" in parts:
            rows += bench_index(args, scratch, prefault)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    print(
        f"scratch: {scratch} ({where}); rounds: {args.big_rounds} (large file), "
        f"{args.rounds} (others); prefault: {'on' if args.prefault else 'off'}; "
        f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}; "
        f"took {time.perf_counter() - started:.0f} s"
    )
    print(
        "figures: medians over rounds; ratio = median of the per-round ratios hearthfile/baseline,"
        " rounds = their range (rates: higher is better; times, CPU and memory: lower is better);"
        " MB = 10^6 B"
    )
    print()
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
