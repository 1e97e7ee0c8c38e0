"""A deterministic discrete-event simulation of FetchSchedule against fake holders.

Each ``SimSource`` is a holder behind a link: a request reaches it after half its
round trip, waits behind the requests before it (one chunk at a time, at the source's
bandwidth), and its answer takes the other half of the round trip back. A source can
send bad bytes, lack chunks, answer with errors, go silent (answers stop coming but
the connection stays up) or disconnect. ``run_sim`` plays the part of the trio shell:
it feeds every outcome to the schedule, sends what ``next_requests`` asks for, drops
what a ``Cancel`` names, and calls ``tick`` at ``next_deadline``. Time is a float that
jumps from event to event; nothing sleeps.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from hearthfile.transfer.schedule import (
    Cancel,
    Event,
    FetchSchedule,
    Request,
    ScheduleConfig,
)

CHUNK = 256 * 1024
MB = 1_000_000

E = TypeVar("E")

Outcome = Literal["ok", "bad_bytes", "not_found", "error"]


@dataclass
class SimSource:
    name: str
    bandwidth_bps: float = 100 * MB
    rtt_s: float = 0.005
    bad: frozenset[int] | None = None  # None: never; empty: every chunk
    lacks: frozenset[int] = frozenset()
    errors: frozenset[int] = frozenset()
    silent_after: float | None = None  # answers due after this never come
    disconnect_at: float | None = None
    busy_until: float = field(default=0.0, init=False)

    def outcome(self, index: int) -> Outcome:
        if index in self.lacks:
            return "not_found"
        if index in self.errors:
            return "error"
        if self.bad is not None and (not self.bad or index in self.bad):
            return "bad_bytes"
        return "ok"


@dataclass
class SimResult:
    outcome: str
    finished_at: float
    first_by: Counter[str]  # chunk -> counted for the source that delivered it first
    events: list[Event[str]]
    event_times: list[float]  # when each of ``events`` happened
    requests: list[tuple[float, Request[str]]]
    schedule: FetchSchedule[str]
    stream_done_at: dict[int, float]  # when each chunk became streamable (prefix complete)

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    def time_of(self, event: Event[str]) -> float:
        return self.event_times[self.events.index(event)]


def run_sim(
    sources: list[SimSource],
    chunk_count: int,
    *,
    missing: set[int] | None = None,
    last_bytes: int = CHUNK,
    seed: int = 0,
    config: ScheduleConfig | None = None,
    max_steps: int = 1_000_000,
) -> SimResult:
    def length(i: int) -> int:
        return last_bytes if i == chunk_count - 1 else CHUNK

    wanted = set(range(chunk_count)) if missing is None else missing
    schedule: FetchSchedule[str] = FetchSchedule(
        chunk_count, length, wanted, random.Random(seed), config
    )
    by_name = {s.name: s for s in sources}
    now = 0.0
    seq = itertools.count()
    heap: list[tuple[float, int, str, str, int]] = []  # (time, seq, what, source, index)
    live: dict[tuple[str, int], int] = {}  # request -> its answer's seq number
    events: list[Event[str]] = []
    event_times: list[float] = []
    requests: list[tuple[float, Request[str]]] = []
    first_by: Counter[str] = Counter()
    stream_done_at: dict[int, float] = {}
    order = sorted(wanted, reverse=True)  # chunks not yet streamable, lowest last
    arrived: set[int] = set()
    for s in sources:
        schedule.add_source(s.name, now)
        if s.disconnect_at is not None:
            heapq.heappush(heap, (s.disconnect_at, next(seq), "disconnect", s.name, -1))

    def send(req: Request[str]) -> None:
        src = by_name[req.source]
        token = next(seq)
        live[(req.source, req.index)] = token
        result = src.outcome(req.index)
        start = max(now + src.rtt_s / 2, src.busy_until)
        finish = start
        if result in ("ok", "bad_bytes"):
            finish = start + length(req.index) / src.bandwidth_bps
            src.busy_until = finish
        due = finish + src.rtt_s / 2
        if src.silent_after is None or due < src.silent_after:
            heapq.heappush(heap, (due, token, result, req.source, req.index))

    def settle() -> None:
        for event in schedule.take_events():
            events.append(event)
            event_times.append(now)
            if isinstance(event, Cancel):
                live.pop((event.source, event.index), None)
        for req in schedule.next_requests(now):
            requests.append((now, req))
            send(req)
        while order and order[-1] in arrived:  # the contiguous prefix can be streamed
            stream_done_at[order.pop()] = now

    settle()
    for _ in range(max_steps):
        if schedule.outcome != "running":
            break
        deadline = schedule.next_deadline(now)
        candidates = [t for t in (heap[0][0] if heap else None, deadline) if t is not None]
        assert candidates, "the schedule stalled: nothing outstanding and nothing to do"
        now = max(now, min(candidates))
        while heap and heap[0][0] <= now and schedule.outcome == "running":
            _, token, what, name, index = heapq.heappop(heap)
            if what == "disconnect":
                schedule.remove_source(name, now)
                for key in [k for k in live if k[0] == name]:
                    del live[key]
            elif live.get((name, index)) == token:
                del live[(name, index)]
                if what == "ok":
                    first = schedule.remaining
                    schedule.chunk_arrived(name, index, length(index), now)
                    if schedule.remaining < first:
                        first_by[name] += 1
                        arrived.add(index)
                else:
                    schedule.chunk_failed(name, index, what, now)  # type: ignore[arg-type]
            settle()
        schedule.tick(now)
        settle()
    else:
        raise AssertionError("simulation did not finish")
    return SimResult(
        schedule.outcome, now, first_by, events, event_times, requests, schedule, stream_done_at
    )
