#!/usr/bin/env python3
"""Simulate hearthfile's gossip at 10, 100 and 1,000 nodes and print the results.

Run from the repository (after scripts/test has built the virtual environment):

    .venv/bin/python scripts/sim_gossip.py [--seeds 5] [--sizes 10,100,1000] [--jobs 2]

Everything runs in this process's children, in simulated time
(hearthfile/testing/gossip_sim.py): every node is a real ``Gossip`` core with real
Ed25519 keys and signatures, messages are dropped, delayed and partitioned by
a seeded random generator, so the same seeds print the same table on any
machine. Only the wall-clock column varies. The scenarios
(hearthfile/testing/gossip_scenarios.py):

- spread: the network converges from cold, then one node publishes a new CID;
  rounds until 99% and 100% of the honest nodes hold it, and bytes sent per
  node per round meanwhile (digests included);
- the same with 20% of messages lost, and with each message held back 0-2
  rounds;
- partition: the nodes split in halves for 20 rounds while a tenth of them
  publish, then heal; rounds until every node holds everything;
- hostile: a tenth of the nodes forge, tamper, replay and flood (see
  hearthfile/testing/gossip_hostile.py); the audit counts forged or replayed
  records accepted and checks every node's state against the memory bound.

Output is Markdown, ready for BENCHMARKS-gossip.md. A round is one
``gossip.interval_s`` (5 s by default).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hearthfile.config import GossipConfig
from hearthfile.testing import gossip_scenarios as sim_scenarios
from hearthfile.testing.gossip_sim import MemoryBound, SimConfig


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="runs per scenario (default 5)")
    parser.add_argument("--sizes", default="10,100,1000", help="network sizes, comma-separated")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    seeds = list(range(1, args.seeds + 1))
    started = time.monotonic()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        print(f"# gossip simulation: seeds {seeds[0]}..{seeds[-1]}, defaults {_defaults()}\n")
        _spread_table(pool, sizes, seeds)
        _partition_table(pool, sizes, seeds)
        _hostile_table(pool, sizes, seeds)
    _bound_note(max(sizes))
    print(f"\ntotal wall-clock time: {time.monotonic() - started:.0f} s")
    return 0


# --- the tables ---------------------------------------------------------------------------


def _spread_table(pool: ProcessPoolExecutor, sizes: list[int], seeds: list[int]) -> None:
    print("## Spread of one new advert (rounds; median / max over seeds)\n")
    print("| scenario | nodes | warm-up from cold | to 99% | to 100% | bytes/node/round | wall s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    # The audit scans every node's state each round: on for the small networks only
    # here (the hostile runs below keep it on at every size).
    scenarios: dict[str, Callable[[int, int], SimConfig]] = {
        "no loss": lambda n, s: SimConfig(nodes=n, seed=s, audit=n <= 100),
        "20% loss": lambda n, s: SimConfig(nodes=n, seed=s, loss=0.2, audit=n <= 100),
        "delay 0-2 rounds": lambda n, s: SimConfig(
            nodes=n, seed=s, max_delay_rounds=2, audit=n <= 100
        ),
    }
    for name, make in scenarios.items():
        for n in sizes:
            t = time.monotonic()
            results = list(pool.map(sim_scenarios.spread, [make(n, s) for s in seeds]))
            print(
                f"| {name} | {n} | {_mm([r.warmup_rounds for r in results])} "
                f"| {_mm([r.rounds_99 for r in results])} | {_mm([r.rounds_100 for r in results])} "
                f"| {statistics.median(r.bytes_per_node_round for r in results):,.0f} "
                f"| {time.monotonic() - t:.0f} |",
                flush=True,
            )
            _report_violations(results)
    print()


def _partition_table(pool: ProcessPoolExecutor, sizes: list[int], seeds: list[int]) -> None:
    print("## Partition: halves apart for 20 rounds, then healed (median / max)\n")
    print("| nodes | rounds after heal until everyone has everything | wall s |")
    print("|---:|---:|---:|")
    for n in sizes:
        t = time.monotonic()
        configs = [SimConfig(nodes=n, seed=s, audit=n <= 100) for s in seeds]
        results = list(pool.map(sim_scenarios.partition, configs))
        caught = _mm([r.catch_up_rounds for r in results])
        print(f"| {n} | {caught} | {time.monotonic() - t:.0f} |", flush=True)
        if any(r.violations for r in results):
            print(f"\nAUDIT VIOLATIONS: {[v for r in results for v in r.violations][:5]}\n")
    print()


def _hostile_table(pool: ProcessPoolExecutor, sizes: list[int], seeds: list[int]) -> None:
    print("## 10% hostile nodes (forge, tamper, replay, flood); audit on every round\n")
    print(
        "| nodes | hostile | honest to 100% | forged or replayed accepted "
        "| fullest honest node: records / CIDs | bound: records / CIDs | wall s |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    rejected: Counter[str] = Counter()
    for n in sizes:
        t = time.monotonic()
        configs = [SimConfig(nodes=n, seed=s) for s in seeds]
        results = list(pool.map(sim_scenarios.hostility, configs))
        violations = [v for r in results for v in r.spread.violations]
        for r in results:
            rejected.update(r.rejections)
        bound = results[0].bound
        print(
            f"| {n} | {max(1, n // 10)} | {_mm([r.spread.rounds_100 for r in results])} "
            f"| {len(violations)} | {max(r.max_records for r in results):,} / "
            f"{max(r.max_cids for r in results):,} | {bound.records:,} / {bound.cids:,} "
            f"| {time.monotonic() - t:.0f} |",
            flush=True,
        )
        if violations:
            print(f"\nAUDIT VIOLATIONS: {violations[:5]}\n")
    print("\nRejections at honest nodes, all hostile runs together:\n")
    print(", ".join(f"{reason} {count:,}" for reason, count in rejected.most_common()))


def _bound_note(nodes: int) -> None:
    cfg = GossipConfig()
    bound = MemoryBound.of(cfg, cfg.max_origins)
    print(
        f"\nMemory bound per node with the defaults: {cfg.max_origins:,} origins x "
        f"({cfg.max_records_per_origin} advert records + 1 node record) = {bound.records:,} "
        f"records, holding at most {bound.cids:,} CIDs ({cfg.max_records_per_origin} x "
        f"{cfg.max_cids_per_record} per origin); in a {nodes:,}-node network, "
        f"{MemoryBound.of(cfg, nodes).records:,} records."
    )


def _mm(values: list[int | None]) -> str:
    """'median / max', or a count of runs that never got there."""
    done = [v for v in values if v is not None]
    if len(done) < len(values):
        return f"{len(values) - len(done)} of {len(values)} runs never"
    return f"{statistics.median(done):g} / {max(done)}"


def _report_violations(results: list[sim_scenarios.Spread]) -> None:
    violations = [v for r in results for v in r.violations]
    if violations:
        print(f"\nAUDIT VIOLATIONS: {violations[:5]}\n")


def _defaults() -> str:
    cfg = GossipConfig()
    return f"interval {cfg.interval_s:g} s, fanout {cfg.fanout}, bootstrap 3 peers, up to 8"


if __name__ == "__main__":
    sys.exit(main())
