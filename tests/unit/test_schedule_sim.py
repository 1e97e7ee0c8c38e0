"""FetchSchedule against simulated holders: speed, sharing, failures, endgame.

Times here are simulated seconds (tests/unit/schedule_sim.py), so asserting on them is
deterministic: the same inputs give the same clock readings on any machine.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hearthfile.transfer.schedule import (
    Cancel,
    ChunkRetried,
    FetchComplete,
    FetchFailed,
    ScheduleConfig,
    SourceQuarantined,
    SourceStalled,
)
from tests.unit.schedule_sim import CHUNK, MB, SimSource, run_sim

N = 400  # chunks: 100 MiB


def ideal_s(chunks: int, *bandwidths_bps: float) -> float:
    """Time to move ``chunks`` over links whose bandwidths add up, ignoring latency."""
    return chunks * CHUNK / sum(bandwidths_bps)


def test_one_source_streams_everything_in_order_without_idling() -> None:
    result = run_sim([SimSource("a")], N)
    assert result.outcome == "complete"
    assert [r.index for _, r in result.requests] == list(range(N))
    assert result.finished_at < ideal_s(N, 100 * MB) * 1.02, "the window hides the latency"
    assert result.of(Cancel) == []


def test_more_holders_make_a_fetch_faster() -> None:
    one = run_sim([SimSource("a")], N)
    three = run_sim([SimSource(n) for n in "abc"], N)
    assert three.finished_at < one.finished_at / 2.5
    assert three.finished_at < ideal_s(N, 300 * MB) * 1.05


def test_three_equal_sources_share_roughly_equally() -> None:
    for seed in range(5):
        result = run_sim([SimSource(n) for n in "abc"], N, seed=seed)
        assert result.outcome == "complete"
        shares = [result.first_by[n] / N for n in "abc"]
        assert all(share > 0.28 for share in shares), shares


def test_a_ten_times_slower_source_gets_proportionally_fewer_chunks() -> None:
    fast = [SimSource(n) for n in "abc"]
    slow = SimSource("slow", bandwidth_bps=10 * MB, rtt_s=0.02)
    result = run_sim([*fast, slow], N)
    assert result.outcome == "complete"
    fast_mean = sum(result.first_by[s.name] for s in fast) / len(fast)
    assert 0 < result.first_by["slow"] < fast_mean / 5
    stats = result.schedule.stats()
    assert stats["slow"].window < stats["a"].window
    # The slow source never holds the fetch back: no later than the fast three alone.
    alone = run_sim([SimSource(n) for n in "abc"], N)
    assert result.finished_at <= alone.finished_at * 1.01


def test_windows_follow_the_bandwidth_delay_product() -> None:
    near = SimSource("near", bandwidth_bps=100 * MB, rtt_s=0.001)
    far = SimSource("far", bandwidth_bps=100 * MB, rtt_s=0.05)
    result = run_sim([near, far], N)
    stats = result.schedule.stats()
    # 1 ms plus a chunk's transmission at 100 MB/s is about 1.5 chunks in flight...
    assert stats["near"].window <= 1.5 * ScheduleConfig().window_gain
    # ...and 50 ms about 19: the gain times that, capped at 32.
    assert stats["far"].window == 32
    assert result.first_by["far"] > N / 3, "a long fat link is kept busy too"


def test_a_source_sending_bad_bytes_is_quarantined_and_the_fetch_completes() -> None:
    evil = SimSource("evil", bad=frozenset({5, 6, 7, 8, 9, 10, 11, 12}))
    result = run_sim([SimSource("a"), SimSource("b"), evil], N)
    assert result.outcome == "complete"
    quarantined = result.of(SourceQuarantined)
    assert [(e.source, e.reason) for e in quarantined] == [("evil", "bad_bytes")]
    caught_at = result.time_of(quarantined[0])
    assert caught_at > 0
    assert not [r for t, r in result.requests if r.source == "evil" and t > caught_at]
    assert result.schedule.stats()["evil"].state == "quarantined"


def test_a_source_that_disconnects_mid_fetch_loses_its_chunks_to_the_others() -> None:
    gone = SimSource("gone", disconnect_at=0.2)
    result = run_sim([SimSource("a"), SimSource("b"), gone], N)
    assert result.outcome == "complete"
    reassigned = [e for e in result.of(ChunkRetried) if e.reason == "removed"]
    assert reassigned and all(e.failures == 0 for e in reassigned)
    assert result.finished_at < ideal_s(N, 200 * MB) * 1.05


def test_a_holder_that_goes_silent_is_dropped_and_never_stalls_the_stream() -> None:
    dead = SimSource("dead", silent_after=0.2)
    result = run_sim([SimSource("a"), SimSource("b"), dead], 2000)
    assert result.outcome == "complete"
    assert [e.source for e in result.of(SourceStalled)] == ["dead"]
    assert result.finished_at < ideal_s(2000, 200 * MB) * 1.05
    ready = [result.stream_done_at[i] for i in range(2000)]
    gap = max(b - a for a, b in itertools.pairwise(ready))
    assert gap < 0.25, "in-order output never waits for a request timeout (2 s floor)"


def test_a_holder_silent_from_the_start_costs_one_hedge_not_a_timeout() -> None:
    result = run_sim(
        [SimSource("dead", silent_after=0.0), SimSource("a")], 1, last_bytes=1000, seed=3
    )
    assert result.outcome == "complete"
    assert result.finished_at < 1.5  # the initial timeout is 20 s


def test_endgame_a_slow_holder_of_the_last_chunk_does_not_hold_the_fetch() -> None:
    fast = SimSource("fast", bandwidth_bps=100 * MB)
    slow = SimSource("slow", bandwidth_bps=1 * MB)  # 0.26 s a chunk
    result = run_sim([fast, slow], 40)
    alone = run_sim([SimSource("fast")], 40)
    assert result.outcome == "complete"
    assert result.finished_at <= alone.finished_at * 1.05
    losers = [e for e in result.of(Cancel) if e.reason == "duplicate"]
    assert losers and all(e.source == "slow" for e in losers)
    assert result.schedule.stats()["slow"].timeouts == 0, "slow is not late: no penalty"


def test_endgame_wastes_at_most_the_chunks_outstanding_at_the_end() -> None:
    result = run_sim([SimSource(n) for n in "abcd"], N)
    duplicates = [r for _, r in result.requests if r.duplicate]
    windows = sum(s.window for s in result.schedule.stats().values())
    assert len(duplicates) <= windows
    assert len(result.requests) == N + len(duplicates)


def test_partial_holders_together_complete_the_blob() -> None:
    evens = SimSource("evens", lacks=frozenset(range(1, N, 2)))
    odds = SimSource("odds", lacks=frozenset(range(0, N, 2)))
    result = run_sim([evens, odds], N)
    assert result.outcome == "complete"
    assert result.first_by == {"evens": N // 2, "odds": N // 2}


def test_a_chunk_that_errors_everywhere_fails_the_fetch_naming_it() -> None:
    flaky = frozenset({37})
    result = run_sim([SimSource(n, errors=flaky) for n in "abcd"], N)
    assert result.outcome == "failed"
    assert result.of(FetchFailed) == [FetchFailed(37, 3, "attempts")]
    assert result.of(FetchComplete) == []


def test_a_range_fetch_asks_only_for_its_chunks() -> None:
    wanted = set(range(100, 140)) - {105, 106}
    result = run_sim([SimSource("a"), SimSource("b")], N, missing=wanted)
    assert result.outcome == "complete"
    assert {r.index for _, r in result.requests} == wanted


@pytest.mark.parametrize("seed", range(3))
def test_mixed_trouble_still_completes(seed: int) -> None:
    n = 3000
    sources = [
        SimSource("fast"),
        SimSource("far", rtt_s=0.08),
        SimSource("slow", bandwidth_bps=5 * MB),
        SimSource("liar", bad=frozenset(range(1000, n, 7))),
        SimSource("dies", disconnect_at=0.5),
        SimSource("hangs", silent_after=1.0),
        SimSource("partial", lacks=frozenset(range(0, n, 3))),
    ]
    result = run_sim(sources, n, seed=seed, config=ScheduleConfig(max_window=16))
    assert result.outcome == "complete"
    states = {name: stats.state for name, stats in result.schedule.stats().items()}
    assert states["liar"] == "quarantined"
    assert states["dies"] == "removed"
    assert states["hangs"] == "stalled"
    # Once the troublemakers are out, four good holders are left (one of them slow).
    assert result.finished_at < ideal_s(n, 300 * MB)


@st.composite
def holders(draw: st.DrawFn) -> SimSource:
    lo, hi = 0, 60
    return SimSource(
        draw(st.uuids()).hex[:6],
        bandwidth_bps=draw(st.sampled_from([1, 10, 100, 300])) * MB,
        rtt_s=draw(st.sampled_from([0.0005, 0.005, 0.05, 0.2])),
        bad=draw(st.none() | st.frozensets(st.integers(lo, hi), max_size=3)),
        lacks=draw(st.frozensets(st.integers(lo, hi), max_size=10)),
        errors=draw(st.frozensets(st.integers(lo, hi), max_size=3)),
        silent_after=draw(st.none() | st.floats(0, 2)),
        disconnect_at=draw(st.none() | st.floats(0, 2)),
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(holders(), min_size=1, max_size=6), st.integers(1, 60), st.integers(0, 9))
def test_any_mix_of_holders_ends_complete_or_failed(
    sources: list[SimSource], chunks: int, seed: int
) -> None:
    result = run_sim(sources, chunks, seed=seed)  # asserts it never stalls
    ends = result.of(FetchComplete) + result.of(FetchFailed)
    assert len(ends) == 1
    if result.outcome == "complete":
        assert result.schedule.remaining == 0
    per_chunk: dict[int, int] = {}
    for _, r in result.requests:
        per_chunk[r.index] = per_chunk.get(r.index, 0) + 1
    # Each request for a chunk ends in its arrival, a counted failure (at most 3), a
    # not_found or the loss of its source (each at most once per source here), or a
    # cancelled copy (at most one per arrival).
    bound = 3 + 2 * len(sources) + 2
    assert all(n <= bound for n in per_chunk.values()), "retries and copies are bounded"
