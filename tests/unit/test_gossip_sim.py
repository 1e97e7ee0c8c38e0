"""Gossip in simulation (hearthfile/testing/gossip_sim.py): the goals of the dissemination design,
at up to 300 nodes (scripts/sim_gossip.py runs 1,000).

Round counts are deterministic for a seed, so these assert on them; they are
simulated rounds, not timings. Every run has the audit on: no forged or
replayed record retained or accepted anywhere, and every node within the
memory bound.
"""

from __future__ import annotations

import pytest

from hearthfile.testing import gossip_scenarios as sim_scenarios
from hearthfile.testing.gossip_sim import MemoryBound, Network, SimConfig

#: The design goal for a thousand nodes; smaller networks must do at least as well.
GOAL_ROUNDS = 15


@pytest.fixture(scope="module")
def spreads() -> dict[int, sim_scenarios.Spread]:
    return {n: sim_scenarios.spread(SimConfig(nodes=n, seed=7)) for n in (10, 100, 300)}


def test_news_reaches_everyone_in_few_rounds(spreads: dict[int, sim_scenarios.Spread]) -> None:
    for n, result in spreads.items():
        assert result.violations == ()
        assert result.warmup_rounds is not None and result.warmup_rounds <= GOAL_ROUNDS, n
        assert result.rounds_99 is not None and result.rounds_100 is not None, n
        assert result.rounds_99 <= result.rounds_100 <= GOAL_ROUNDS, n


def test_rounds_grow_like_log_n(spreads: dict[int, sim_scenarios.Spread]) -> None:
    rounds = {n: r.rounds_100 or GOAL_ROUNDS for n, r in spreads.items()}
    # Thirty times the nodes costs a few rounds, not thirty times the rounds.
    assert rounds[10] <= 3
    assert rounds[300] <= rounds[10] + 5
    assert rounds[300] <= rounds[100] + 2


def test_bytes_per_round_are_mostly_the_digest(spreads: dict[int, sim_scenarios.Spread]) -> None:
    for n, result in spreads.items():
        # fanout digests of ~53 bytes an origin, plus replies: linear in n, nothing worse.
        assert result.bytes_per_node_round < 3 * 60 * n + 4000, n


def test_twenty_percent_loss() -> None:
    result = sim_scenarios.spread(SimConfig(nodes=100, seed=3, loss=0.2))
    assert result.violations == ()
    assert result.rounds_100 is not None and result.rounds_100 <= GOAL_ROUNDS


def test_delays_of_up_to_two_rounds() -> None:
    result = sim_scenarios.spread(SimConfig(nodes=100, seed=4, max_delay_rounds=2))
    assert result.violations == ()
    assert result.rounds_100 is not None and result.rounds_100 <= GOAL_ROUNDS


def test_a_healed_partition_catches_up_within_a_few_rounds() -> None:
    result = sim_scenarios.partition(SimConfig(nodes=100, seed=5))
    assert result.violations == ()
    assert result.catch_up_rounds is not None and result.catch_up_rounds <= 5


def test_a_healed_partition_with_loss() -> None:
    result = sim_scenarios.partition(SimConfig(nodes=100, seed=6, loss=0.2))
    assert result.violations == ()
    assert result.catch_up_rounds is not None and result.catch_up_rounds <= 8


@pytest.mark.parametrize(
    "cfg",
    [SimConfig(nodes=100, seed=8), SimConfig(nodes=30, seed=9, wire=True)],
    ids=["100 nodes", "30 nodes through the codec"],
)
def test_hostile_members_get_nothing_past_the_checks(cfg: SimConfig) -> None:
    result = sim_scenarios.hostility(cfg)
    assert result.spread.violations == (), "forged, replayed or over the bound"
    assert result.spread.rounds_100 is not None and result.spread.rounds_100 <= GOAL_ROUNDS
    assert result.max_records <= result.bound.records and result.max_cids <= result.bound.cids
    # Every kind of attack was tried and refused.
    for reason in ("bad_signature", "rate_limited", "future", "stale", "oversize", "not_newer"):
        assert result.rejections[reason] > 0, reason
    if cfg.wire:
        assert result.rejections["malformed"] > 0


def test_runs_are_reproducible() -> None:
    cfg = SimConfig(nodes=40, seed=11, loss=0.1)
    assert sim_scenarios.spread(cfg) == sim_scenarios.spread(cfg)


def test_the_memory_bound() -> None:
    bound = MemoryBound.of(SimConfig().gossip, 1000)
    assert bound == MemoryBound(origins=1000, records=65_000, cids=65_536_000)
    net = Network(SimConfig(nodes=20, seed=1))
    assert net.bound.origins == 20
