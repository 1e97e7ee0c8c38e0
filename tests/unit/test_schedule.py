"""The multi-source fetch schedule (hearthfile/transfer/schedule.py), driven by hand.

Time is a float the tests move; sources are strings. The simulated fetches with
bandwidths and latencies are in test_schedule_sim.py.
"""

from __future__ import annotations

import ast
import random
from collections import deque
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note_outcome
from hypothesis import strategies as st

from hearthfile.errors import LocalProtocolError
from hearthfile.transfer import schedule as schedule_module
from hearthfile.transfer.schedule import (
    Cancel,
    ChunkRetried,
    Event,
    FetchComplete,
    FetchFailed,
    FetchSchedule,
    Request,
    ScheduleConfig,
    SourceQuarantined,
    SourceStalled,
)

SIZE = 1000
E = TypeVar("E")


def make(
    count: int, missing: object = None, config: ScheduleConfig | None = None, seed: int = 7
) -> FetchSchedule[str]:
    wanted = range(count) if missing is None else missing
    return FetchSchedule(count, lambda i: SIZE, wanted, random.Random(seed), config)  # type: ignore[arg-type]


def indices(requests: list[Request[str]], source: str | None = None) -> list[int]:
    return [r.index for r in requests if source is None or r.source == source]


def of(events: list[Event[str]], kind: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


def test_the_core_is_pure() -> None:
    tree = ast.parse(Path(schedule_module.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    banned = {"trio", "trio_websocket", "socket", "asyncio", "time", "select", "selectors"}
    assert not {m.split(".")[0] for m in imported} & banned


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        ScheduleConfig(max_attempts=0)
    with pytest.raises(ValueError):
        ScheduleConfig(initial_window=40, max_window=32)
    with pytest.raises(ValueError):
        ScheduleConfig(timeout_floor_s=5, timeout_ceiling_s=1)
    for fraction in (0.0, 1.5):
        with pytest.raises(ValueError):
            ScheduleConfig(refill_fraction=fraction)


def test_nothing_missing_is_complete_at_once() -> None:
    s = make(5, missing=[])
    assert s.outcome == "complete"
    assert s.take_events() == [FetchComplete(0, 0)]
    s.add_source("a", 0.0)
    assert s.next_requests(0.0) == []


def test_single_source_fetches_everything_in_order() -> None:
    s = make(20)
    s.add_source("a", 0.0)
    first = s.next_requests(0.0)
    assert first == [Request("a", i) for i in range(4)], "the initial window, in order"
    now, asked, queue = 0.0, indices(first), deque(first)
    while queue:
        now += 0.01
        request = queue.popleft()
        s.chunk_arrived("a", request.index, SIZE, now)
        more = s.next_requests(now)
        asked += indices(more)
        queue.extend(more)
        assert not more or len(queue) <= s.window("a")
    assert asked == list(range(20))
    assert s.take_events() == [FetchComplete(20, 20 * SIZE)]
    assert s.outcome == "complete" and s.remaining == 0
    stats = s.stats()["a"]
    assert (stats.chunks, stats.nbytes, stats.outstanding) == (20, 20 * SIZE, 0)
    assert stats.throughput_bps > 0 and stats.rtt_s is not None


def test_requests_in_flight_across_all_sources_stay_under_the_cap() -> None:
    config = ScheduleConfig(initial_window=8, max_window=8, max_in_flight=20)
    s = make(200, config=config)
    for name in "abc":
        s.add_source(name, 0.0)
    first = s.next_requests(0.0)
    assert len(first) == 20, "three windows of 8 would be 24"
    assert {r.source for r in first} == set("abc")
    now, outstanding = 0.0, list(first)
    while s.outcome == "running":
        now += 0.01
        done = outstanding.pop(0)
        s.chunk_arrived(done.source, done.index, SIZE, now)
        outstanding += s.next_requests(now)
        assert len(outstanding) <= 20
    assert s.outcome == "complete"


def test_a_window_larger_than_the_cap_is_refused() -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        ScheduleConfig(max_window=32, max_in_flight=16)


def test_a_busy_source_is_topped_up_in_runs_once_half_its_window_is_free() -> None:
    s = make(40, config=ScheduleConfig(initial_window=8, max_window=8))
    s.add_source("a", 0.0)
    assert indices(s.next_requests(0.0)) == list(range(8))
    s.chunk_arrived("a", 0, SIZE, 0.01)
    s.chunk_arrived("a", 1, SIZE, 0.02)
    s.chunk_arrived("a", 2, SIZE, 0.03)
    assert s.next_requests(0.03) == [], "5 of 8 still out: less than half free"
    s.chunk_arrived("a", 3, SIZE, 0.04)
    run = indices(s.next_requests(0.04))
    assert run == list(range(8, 8 + s.window("a") - 4)), "then filled in one run"
    for i in range(4, 8 + len(run)):
        s.chunk_arrived("a", i, SIZE, 0.05 + i / 1000)
    assert indices(s.next_requests(0.2)), "an idle source is always given work"


def test_a_small_refill_fraction_gives_each_free_slot_at_once() -> None:
    s = make(10, config=ScheduleConfig(initial_window=4, refill_fraction=0.25, window_gain=2.0))
    s.add_source("a", 0.0)
    s.next_requests(0.0)
    s.chunk_arrived("a", 0, SIZE, 0.01)
    assert indices(s.next_requests(0.01)) == [4]


def test_range_fetch_asks_only_for_missing_chunks_in_the_range() -> None:
    stored = {12, 13, 17}
    wanted = set(range(10, 20)) - stored
    s = make(100, missing=wanted)
    s.add_source("a", 0.0)
    s.add_source("b", 0.0)
    asked: list[int] = []
    now = 0.0
    while s.outcome == "running":
        requests = s.next_requests(now)
        assert requests, "a running fetch with idle sources must ask for something"
        asked += indices(requests)
        for r in requests:
            s.chunk_arrived(r.source, r.index, SIZE, now)
        now += 0.01
    assert set(asked) == wanted
    assert s.outcome == "complete"


def test_equal_unmeasured_sources_share_the_first_requests() -> None:
    s = make(100)
    for name in "abc":
        s.add_source(name, 0.0)
    requests = s.next_requests(0.0)
    assert len(requests) == 12
    assert {name: len(indices(requests, name)) for name in "abc"} == {"a": 4, "b": 4, "c": 4}
    assert sorted(indices(requests)) == list(range(12)), "in order, no duplicates"


def test_bad_bytes_quarantine_the_source_and_the_chunk_goes_elsewhere() -> None:
    s = make(10)
    s.add_source("evil", 0.0)
    s.add_source("good", 0.0)
    first = s.next_requests(0.0)
    evil = indices(first, "evil")
    bad, rest = evil[0], evil[1:]
    s.chunk_failed("evil", bad, "bad_bytes", 1.0)
    events = s.take_events()
    assert events[0] == SourceQuarantined("evil", bad)
    assert {(e.source, e.index) for e in of(events, Cancel)} == {("evil", i) for i in rest}
    retried = {e.index: e for e in of(events, ChunkRetried)}
    assert retried[bad] == ChunkRetried(bad, "evil", "bad_bytes", 1)
    assert s.stats()["evil"].state == "quarantined"
    s.add_source("evil", 2.0)  # a quarantined source stays out, even if offered again
    now = 2.0
    pending = deque(r for r in first if r.source == "good")
    pending.extend(s.next_requests(now))
    while pending:
        r = pending.popleft()
        assert r.source == "good"
        now += 0.01
        s.chunk_arrived(r.source, r.index, SIZE, now)
        pending.extend(s.next_requests(now))
    assert s.outcome == "complete"
    assert s.stats()["good"].chunks == 10


def test_late_good_bytes_from_a_quarantined_source_still_count() -> None:
    s = make(8)
    s.add_source("evil", 0.0)
    s.add_source("good", 0.0)
    evil = indices(s.next_requests(0.0), "evil")
    s.chunk_failed("evil", evil[0], "bad_bytes", 1.0)
    s.chunk_arrived("evil", evil[1], SIZE, 1.0)  # verified by the shell: the bytes are fine
    assert s.remaining == 7
    assert evil[1] not in indices(s.next_requests(1.0))


def test_removed_source_chunks_are_reassigned_without_an_attempt() -> None:
    s = make(12)
    s.add_source("a", 0.0)
    s.add_source("b", 0.0)
    first = s.next_requests(0.0)
    held = indices(first, "a")
    s.remove_source("a", 1.0)
    events = s.take_events()
    assert of(events, Cancel) == [], "nothing to cancel on a closed connection"
    assert [(e.index, e.reason, e.failures) for e in of(events, ChunkRetried)] == [
        (i, "removed", 0) for i in held
    ]
    now = 1.0
    assert s.next_requests(now) == [], "b's window is full"
    pending = deque(r for r in first if r.source == "b")
    while pending:
        r = pending.popleft()
        assert r.source == "b"
        now += 0.01
        s.chunk_arrived("b", r.index, SIZE, now)
        pending.extend(s.next_requests(now))
    assert s.outcome == "complete"


def test_remove_the_last_source_fails_the_fetch() -> None:
    s = make(3)
    s.add_source("a", 0.0)
    s.next_requests(0.0)
    s.remove_source("a", 1.0)
    assert of(s.take_events(), FetchFailed) == [FetchFailed(0, 0, "no_source")]
    assert s.outcome == "failed"
    assert s.next_requests(2.0) == []


def test_a_chunk_failing_everywhere_fails_the_fetch_after_three_attempts() -> None:
    s = make(1)
    for name in "abcd":
        s.add_source(name, 0.0)
    tried: list[str] = []
    now = 0.0
    while s.outcome == "running":
        requests = s.next_requests(now)
        assert len(requests) == 1, "one request at a time for one chunk (no endgame yet)"
        tried.append(requests[0].source)
        now += 0.01
        s.chunk_failed(requests[0].source, 0, "error", now)
    assert len(set(tried)) == 3, "each retry goes to a source that has not failed it"
    assert of(s.take_events(), FetchFailed) == [FetchFailed(0, 3, "attempts")]


def test_with_one_source_a_failed_chunk_is_retried_on_it() -> None:
    s = make(2)
    s.add_source("a", 0.0)
    s.next_requests(0.0)
    s.chunk_failed("a", 1, "error", 0.1)
    assert indices(s.next_requests(0.1)) == [1]
    s.chunk_arrived("a", 0, SIZE, 0.2)
    s.chunk_arrived("a", 1, SIZE, 0.2)
    assert s.outcome == "complete"


def test_not_found_costs_no_attempt_and_the_chunk_goes_to_another_holder() -> None:
    s = make(3)
    s.add_source("partial", 0.0)
    s.add_source("full", 0.0)
    lacked = indices(s.next_requests(0.0), "partial")[0]
    s.chunk_failed("partial", lacked, "not_found", 0.1)
    assert s.take_events() == [ChunkRetried(lacked, "partial", "not_found", 0)]
    requests = s.next_requests(0.1)
    assert Request("full", lacked) in requests
    assert all(r.index != lacked for r in requests if r.source == "partial")


def test_every_source_lacking_a_chunk_fails_with_no_source() -> None:
    s = make(2)
    s.add_source("a", 0.0)
    s.add_source("b", 0.0)
    first = s.next_requests(0.0)
    holder = next(r.source for r in first if r.index == 1)
    other = "b" if holder == "a" else "a"
    s.chunk_failed(holder, 1, "not_found", 0.1)
    again = [r for r in s.next_requests(0.1) if r.index == 1]
    assert [r.source for r in again] == [other]
    s.chunk_failed(other, 1, "not_found", 0.2)
    assert of(s.take_events(), FetchFailed) == [FetchFailed(1, 0, "no_source")]


def test_a_timeout_retries_elsewhere_and_puts_the_source_on_probation() -> None:
    # No source is measured here, so a long assumed latency keeps endgame copies out.
    cfg = ScheduleConfig(initial_timeout_s=10.0, unmeasured_latency_s=100.0)
    s = make(20, config=cfg)
    s.add_source("slow", 0.0)
    first = s.next_requests(0.0)
    assert s.next_deadline(0.0) == 10.0
    s.add_source("spare", 1.0)
    spare = s.next_requests(1.0)
    for r in spare:
        s.chunk_arrived("spare", r.index, SIZE, 1.5)
    s.take_events()
    s.tick(9.99)
    assert s.take_events() == []
    s.tick(10.0)
    events = s.take_events()
    timed_out = indices(first)
    assert [(e.source, e.index, e.reason) for e in of(events, Cancel)] == [
        ("slow", i, "timeout") for i in timed_out
    ]
    assert all(e.reason == "timeout" and e.failures == 1 for e in of(events, ChunkRetried))
    assert of(events, SourceQuarantined) == [], "slowness is not dishonesty"
    assert s.window("slow") == 1
    requests = s.next_requests(10.0)
    retried_to = {r.index: r.source for r in requests}
    assert all(retried_to.get(i) != "slow" for i in timed_out), "retried on another source"
    assert len(indices(requests, "slow")) == 1, "probation: one request"


def test_a_source_timing_out_round_after_round_is_dropped_as_stalled() -> None:
    s = make(20, config=ScheduleConfig(initial_timeout_s=5.0, stall_timeouts=2))
    s.add_source("dead", 0.0)
    assert len(s.next_requests(0.0)) == 4
    s.tick(5.0)  # round one: the four requests sent blind
    assert len(of(s.take_events(), Cancel)) == 4
    assert s.next_requests(5.0) == [Request("dead", 0)], "probation: one request"
    s.tick(9.0)
    assert s.take_events() == []
    s.tick(10.0)  # round two: the probation request
    events = s.take_events()
    assert SourceStalled("dead", 5) in events
    assert events[-1] == FetchFailed(0, 2, "no_source"), "no usable source left"
    assert s.stats()["dead"].state == "stalled"


def test_a_delivery_between_timeouts_keeps_the_source() -> None:
    s = make(20, config=ScheduleConfig(initial_timeout_s=5.0, stall_timeouts=2))
    s.add_source("flaky", 0.0)
    s.next_requests(0.0)
    s.chunk_arrived("flaky", 0, SIZE, 0.5)
    s.tick(5.0)
    (probe,) = s.next_requests(5.0)
    s.chunk_arrived("flaky", probe.index, SIZE, 5.5)  # alive after all: rounds start over
    more = s.next_requests(5.5)
    assert more and all(r.source == "flaky" for r in more)
    deadline = s.next_deadline(5.5)
    assert deadline is not None
    s.tick(deadline)
    assert of(s.take_events(), SourceStalled) == []
    assert s.stats()["flaky"].state == "active"


def test_endgame_fast_source_takes_the_slow_sources_last_chunk() -> None:
    s = make(10)
    s.add_source("fast", 0.0)
    s.add_source("slow", 0.0)
    now = 0.0
    requests = s.next_requests(now)
    # Measure both: fast answers in 10 ms, slow in 1 s.
    queue = {r.index: r for r in requests}
    due: list[tuple[float, Request[str]]] = [
        (now + (0.01 if r.source == "fast" else 1.0), r) for r in requests
    ]
    duplicated: list[Request[str]] = []
    while s.outcome == "running":
        due.sort(key=lambda d: (d[0], d[1].index))
        now, r = due.pop(0)
        if r.index not in queue and not r.duplicate:
            continue
        s.chunk_arrived(r.source, r.index, SIZE, now)
        cancelled = of(s.take_events(), Cancel)
        for c in cancelled:
            due = [d for d in due if (d[1].source, d[1].index) != (c.source, c.index)]
        for new in s.next_requests(now):
            if new.duplicate:
                duplicated.append(new)
            queue[new.index] = new
            due.append((now + (0.01 if new.source == "fast" else 1.0), new))
    assert s.outcome == "complete"
    assert duplicated and all(d.source == "fast" for d in duplicated)
    assert now < 0.2, "completion bounded by the fast source, not the slow one's 1 s"
    assert s.stats()["fast"].chunks >= 8


def test_endgame_duplicate_cancels_the_loser() -> None:
    s = make(2)
    s.add_source("a", 0.0)
    s.add_source("b", 0.0)
    first = s.next_requests(0.0)
    holder = {r.index: r.source for r in first}
    assert len(first) == 2, "unmeasured sources are not second-guessed at once"
    a_chunk = next(i for i, src in holder.items() if src == "a")
    b_chunk = 1 - a_chunk
    # a took 0.6 s, longer than b's assumed 0.5 s: a is not expected to beat b ...
    s.chunk_arrived("a", a_chunk, SIZE, 0.6)
    assert s.next_requests(0.6) == [], "b is not late yet"
    # ... until b is late: twice the latency assumed for an unmeasured source.
    assert s.next_deadline(0.6) == pytest.approx(1.0)
    s.tick(1.0)
    dup = s.next_requests(1.0)
    assert dup == [Request("a", b_chunk, True)]
    s.chunk_arrived("a", b_chunk, SIZE, 1.5)
    assert s.take_events() == [Cancel("b", b_chunk, "duplicate"), FetchComplete(2, 2 * SIZE)]
    assert s.stats()["b"].timeouts == 1, "b lost because it was late: as good as a timeout"
    s.chunk_arrived("b", b_chunk, SIZE, 1.6)  # the loser raced the cancel: harmless


def test_a_measured_fast_source_copies_a_chunk_from_an_unmeasured_one() -> None:
    s = make(2)
    s.add_source("a", 0.0)
    s.add_source("b", 0.0)
    holder = {r.source: r.index for r in s.next_requests(0.0)}
    s.chunk_arrived("a", holder["a"], SIZE, 0.01)  # a: 10 ms, b: assumed 0.5 s
    assert s.next_requests(0.01) == [Request("a", holder["b"], True)]
    s.chunk_arrived("b", holder["b"], SIZE, 0.02)  # b wins after all
    assert s.take_events() == [Cancel("a", holder["b"], "duplicate"), FetchComplete(2, 2 * SIZE)]
    assert s.stats()["a"].timeouts == 0, "losing a race in time is no fault"


def test_a_late_arrival_after_a_timeout_is_accepted() -> None:
    s = make(3, config=ScheduleConfig(initial_timeout_s=1.0))
    s.add_source("a", 0.0)
    s.next_requests(0.0)
    s.tick(1.0)
    s.take_events()
    s.chunk_arrived("a", 2, SIZE, 1.1)  # the answer was already on its way
    assert s.remaining == 2
    for r in s.next_requests(1.1):
        assert r.index != 2


def test_shell_mistakes_are_local_errors() -> None:
    s = make(4, missing=[1, 2])
    s.add_source("a", 0.0)
    with pytest.raises(LocalProtocolError):
        s.chunk_arrived("a", 0, SIZE, 0.0)  # not part of the fetch
    with pytest.raises(LocalProtocolError):
        s.chunk_arrived("a", 9, SIZE, 0.0)
    with pytest.raises(LocalProtocolError):
        s.chunk_failed("nobody", 1, "error", 0.0)
    with pytest.raises(LocalProtocolError):
        s.chunk_failed("a", 1, "exploded", 0.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        make(4, missing=[4])


def test_same_inputs_same_decisions() -> None:
    def run(seed: int) -> list[Request[str]]:
        s = make(30, seed=seed)
        for name in "abcde":
            s.add_source(name, 0.0)
        out = s.next_requests(0.0)
        for r in out[:5]:
            s.chunk_arrived(r.source, r.index, SIZE, 0.1)
        return out + s.next_requests(0.1)

    assert run(1) == run(1)


# --- property: any order of outcomes ---------------------------------------------------------

#: Weighted by repetition: mostly arrivals, now and then something going wrong.
ACTIONS = ["arrive"] * 8 + [
    "error",
    "error",
    "timeout",
    "not_found",
    "tick",
    "tick",
    "readd",
    "readd",
    "late",
    "bad_bytes",
    "remove",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_order_of_outcomes_keeps_the_invariants(data: st.DataObject) -> None:
    count = data.draw(st.integers(1, 24), label="chunks")
    missing = data.draw(st.sets(st.integers(0, count - 1), min_size=1), label="missing")
    names = [f"s{i}" for i in range(data.draw(st.integers(1, 5), label="sources"))]
    cfg = ScheduleConfig(
        initial_window=2,
        max_window=4,
        initial_timeout_s=5.0,
        timeout_floor_s=1.0,
        timeout_ceiling_s=8.0,
    )
    s: FetchSchedule[str] = FetchSchedule(
        count, lambda i: SIZE, missing, random.Random(data.draw(st.integers())), cfg
    )
    now = 0.0
    for name in names:
        s.add_source(name, now)
    live: set[tuple[str, int]] = set()
    given_up: set[tuple[str, int]] = set()
    done: set[int] = set()
    removed: set[str] = set()
    banned: set[str] = set()  # quarantined: for good
    stalled: set[str] = set()
    terminal: list[Event[str]] = []
    failed_by: dict[int, set[str]] = {}  # sources whose request for the chunk failed

    def settle() -> None:
        for event in s.take_events():
            if isinstance(event, Cancel):
                assert (event.source, event.index) in live
                live.discard((event.source, event.index))
                given_up.add((event.source, event.index))
                if event.reason == "timeout":
                    failed_by.setdefault(event.index, set()).add(event.source)
            elif isinstance(event, SourceQuarantined):
                banned.add(event.source)
            elif isinstance(event, SourceStalled):
                stalled.add(event.source)
            elif isinstance(event, FetchComplete | FetchFailed):
                terminal.append(event)
        if s.outcome != "running":
            assert s.next_requests(now) == []
            return
        for r in s.next_requests(now):
            assert r.index in missing and r.index not in done
            assert r.source not in banned | removed | stalled
            assert (r.source, r.index) not in live
            if r.duplicate:
                assert r.source not in failed_by.get(r.index, set()), "copies only from others"
            live.add((r.source, r.index))
            holders = [k for k in live if k[1] == r.index]
            assert len(holders) <= 2, "at most one duplicate per chunk"
            assert sum(1 for k in live if k[0] == r.source) <= s.window(r.source)

    settle()
    steps = 0
    while not terminal and steps < 400:
        steps += 1
        action = data.draw(st.sampled_from(ACTIONS), label="action")
        if action == "tick":
            now += data.draw(st.sampled_from([0.0, 0.3, 1.0, 5.0, 9.0]), label="dt")
            s.tick(now)
        elif action == "remove":
            name = data.draw(st.sampled_from(names), label="removed")
            s.remove_source(name, now)
            if name not in banned | stalled:
                removed.add(name)
            for key in [k for k in live if k[0] == name]:
                live.discard(key)
                given_up.add(key)
        elif action == "readd":
            name = data.draw(st.sampled_from(names), label="re-added")
            s.add_source(name, now)
            if name not in banned:
                removed.discard(name)
                stalled.discard(name)
        elif action == "late" and given_up:
            source, index = data.draw(st.sampled_from(sorted(given_up)), label="late answer")
            given_up.discard((source, index))
            # Results are matched to requests by (source, index): a late answer to a
            # request given up on also answers a newer request for the same pair.
            live.discard((source, index))
            if data.draw(st.booleans(), label="late ok"):
                s.chunk_arrived(source, index, SIZE, now)
                done.add(index)
            else:
                s.chunk_failed(source, index, "bad_bytes", now)
                banned.add(source)
                removed.discard(source)
                stalled.discard(source)
        elif live and action not in ("tick", "remove", "readd", "late"):
            source, index = data.draw(st.sampled_from(sorted(live)), label="request")
            live.discard((source, index))
            if action == "arrive":
                s.chunk_arrived(source, index, SIZE, now)
                done.add(index)
            else:
                s.chunk_failed(source, index, action, now)  # type: ignore[arg-type]
                if action != "not_found":
                    failed_by.setdefault(index, set()).add(source)
        now += 0.01
        settle()
    # Then let every request succeed: the fetch must end, one way or the other.
    for _ in range(2000):
        if terminal:
            break
        if live:
            source, index = min(live)
            live.discard((source, index))
            s.chunk_arrived(source, index, SIZE, now)
            done.add(index)
        else:
            deadline = s.next_deadline(now)
            assert deadline is not None, "stalled: nothing outstanding, nothing to wait for"
            now = max(now, deadline)
            s.tick(now)
        now += 0.01
        settle()
    assert len(terminal) == 1, terminal
    note_outcome(f"{s.outcome} after {steps} random steps")
    assert s.outcome == ("complete" if isinstance(terminal[0], FetchComplete) else "failed")
    if s.outcome == "complete":
        assert done >= missing and s.remaining == 0


def test_a_source_that_failed_a_chunk_takes_no_copy_of_it() -> None:
    # A copy that errors while the original is still out must not be copied again
    # from the same source: that would loop as fast as the errors come back.
    s = make(1, config=ScheduleConfig(initial_timeout_s=20.0))
    s.add_source("dead", 0.0)
    assert s.next_requests(0.0) == [Request("dead", 0)]
    s.add_source("err", 0.5)
    s.tick(1.0)
    assert s.next_requests(1.0) == [Request("err", 0, True)], "dead is late"
    s.chunk_failed("err", 0, "error", 1.001)
    assert s.take_events() == [], "the original is still out"
    assert s.next_requests(1.001) == []
    assert s.next_deadline(1.001) == 20.0


# --- swarms: partial holders and the origin ------------------------------------------------


def swarm(order: list[int] | None = None) -> FetchSchedule[str]:
    s = FetchSchedule(
        len(order or range(40)), lambda i: SIZE, range(40), random.Random(7), order=order
    )
    for key in ("origin", "p1", "p2"):
        s.add_source(key, 0.0)
    return s


def test_a_partial_holder_is_asked_only_for_chunks_on_its_have_map() -> None:
    s = swarm()
    s.source_has("p1", [3, 7])
    s.source_has("p2", [])
    asked = s.next_requests(0.0)
    assert set(indices(asked, "p1")) <= {3, 7} and indices(asked, "p1")
    assert indices(asked, "p2") == []


def test_the_origin_is_asked_first_for_what_no_partial_holder_has() -> None:
    s = swarm()
    s.source_has("p1", range(0, 10))
    s.source_has("p2", range(5, 15))
    from_origin = indices(s.next_requests(0.0), "origin")
    assert from_origin and min(from_origin) >= 15, from_origin


def test_without_have_maps_every_source_is_taken_to_hold_everything() -> None:
    s = swarm()
    asked = s.next_requests(0.0)
    assert {r.source for r in asked} == {"origin", "p1", "p2"}
    assert indices(asked) == sorted(indices(asked)) == list(range(len(asked)))


def test_chunks_passed_over_keep_their_place_in_the_order() -> None:
    order = [9, 4, 30, 2, 17, 25, 1, 38] + [
        i for i in range(40) if i not in (9, 4, 30, 2, 17, 25, 1, 38)
    ]
    s = FetchSchedule(40, lambda i: SIZE, range(40), random.Random(7), order=order)
    s.add_source("p1", 0.0)
    s.source_has("p1", [17])
    assert indices(s.next_requests(0.0)) == [17], "p1 holds only 17: 9, 4, 30, 2 are passed over"
    s.add_source("origin", 0.0)
    assert indices(s.next_requests(0.0), "origin")[:4] == [9, 4, 30, 2]


def test_a_windowed_order_spreads_over_the_blob_once_another_fetcher_shows_up() -> None:
    """spread_in_swarm: the chunks not yet asked for are taken in a random order over
    the whole blob from the first partial have-map on; without it the order stays."""
    from hearthfile.transfer.schedule import windowed_order

    def fetch(spread: bool) -> tuple[list[int], list[int]]:
        rng = random.Random(3)
        order = windowed_order(range(400), 16, rng)
        s = FetchSchedule(
            400,
            lambda i: SIZE,
            range(400),
            rng,
            ScheduleConfig(initial_window=8, max_window=8, spread_in_swarm=spread),
            order=order,
        )
        s.add_source("origin", 0.0)
        first = indices(s.next_requests(0.0))
        s.add_source("peer", 0.0)
        s.source_has("peer", [])  # a fetcher that holds nothing yet
        for index in first:
            s.chunk_arrived("origin", index, SIZE, 0.01)
        return first, indices(s.next_requests(0.02), "origin")

    first, later = fetch(spread=True)
    assert max(first) < 16, "alone: the first window"
    assert max(later) >= 64, f"spread over the blob: {later}"
    first, later = fetch(spread=False)
    assert max(first + later) < 32, "the windows in turn"
