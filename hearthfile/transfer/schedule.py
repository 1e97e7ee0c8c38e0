"""Which chunk of a blob to ask which source for, and when (pure, sans-IO).

``FetchSchedule`` is the core of a multi-source fetch (DESIGN.md section 7). The trio
shell tells it what happened (a source joined or left, a chunk arrived verified, a
request failed, time passed) and asks it what to do (``next_requests``, and the events
from ``take_events``: cancellations, retries, quarantines, the outcome). It never
touches bytes, reads no clock and no global random; sources are opaque hashable keys
(the shell uses NodeIds). Given the same inputs and the same ``random.Random`` it makes
the same decisions, so tests drive it with a fake clock and simulated sources.

Windows. Each source has a window: how many requests may be outstanding on it at once.
A window that is too small leaves the source idle for a round trip after every chunk;
one that is too large parks chunks behind a slow source, and they arrive last. The
right size is the bandwidth-delay product, measured as TCP BBR measures it: each
arrival gives a delivery-rate sample (bytes the source delivered between the moment
the request was sent, or the previous delivery if the source was already busy, and its
arrival, divided by that interval), the window keeps the largest of the last few
samples, and the smallest request-to-arrival time seen is the round trip. The window
is ``window_gain`` (8, see its comment) times rate x round trip, in chunks, clamped to [1,
``max_window``]. A source that delivers slower than the window assumed yields smaller
samples and its window shrinks; a source held back by its window yields samples near
what it delivered and the gain doubles the window each round trip, like a slow start.
A new source gets ``initial_window`` requests until that many chunks have arrived.
A busy source is topped up only once ``refill_fraction`` (half) of its window is free,
so the shell can ask for the new chunks in one call rather than one call each.

Piece selection. Chunks go out in index order, so output can stream from the start
and a range fetch is just a smaller ``missing`` set (missing and in the range), or in
a given ``order`` (``windowed_order``: random within consecutive windows of
``ORDER_WINDOW`` chunks, so that nodes fetching the same blob at once hold different
chunks and can serve each other, while the fetch as a whole still moves front to back
and the fetcher can hash the content as the chunks arrive). A chunk that comes back for
a retry is asked for again
before any chunk not yet asked for, and a chunk passed over because the source at
hand lacks it keeps its place in the order for the next source. Each free slot goes
to the source expected to deliver soonest (its round trip plus the chunks queued
ahead of it, at its measured rate); sources not measured yet come first so they get
measured, and a per-source random rank breaks ties so equal sources share evenly.

Swarms. ``source_has`` gives a source's have-map (a holder that is itself fetching):
such a partial holder is asked only for chunks on its latest map. When every other
source is a partial holder, the source at hand (typically the one origin) is asked
first for a chunk none of them holds, within the next ``RARE_SCAN`` places of the
order: what the others hold is better fetched from them, and the origin's upload, the
scarce resource of a distribution, goes to what only it can give.

Late requests and the endgame. Each request carries the time it is expected to arrive
(from the measurements above; ``unmeasured_latency_s`` for a source not measured yet)
and is late once it has taken ``late_factor`` (2) times that, and at least
``late_floor_s`` (50 ms) more. Two things use it:
- The endgame. A source with a free slot and no chunk left to start takes a second
  copy of a chunk outstanding elsewhere: the one whose holder is expected to deliver
  last, and only if this source is expected to deliver it sooner or the holder is
  late. So a slow source holding the last chunks cannot hold the fetch at 99% while a
  faster one idles. ``next_deadline`` wakes the shell when a lone request turns late.
- The stream head. If the first missing chunk (what in-order output waits on) is
  late, the next free slot anywhere takes a copy of it, even mid-fetch.
A chunk has at most two requests at once; when one copy arrives the other is
cancelled, so the waste is bounded by the chunks outstanding at the end. A copy that
loses because it was late counts against its source as a timeout would (below): a
holder that goes silent is found from its lost races long before its requests time
out. Losing a race in time is no fault.

Failures. ``chunk_failed`` takes a reason:
- ``bad_bytes`` (the chunk did not hash to its CID): the source is quarantined for the
  rest of the fetch and never asked again, even if added again; its other requests are
  cancelled and reassigned. The chunk counts a failed attempt.
- ``error`` (any wire error but not_found, a broken call): a failed attempt; the
  source's window is halved.
- ``timeout``: a failed attempt, and the source goes on probation (window 1, growing
  by one per delivered chunk) rather than into quarantine: slowness is not dishonesty,
  and the chunk is simply reassigned. The schedule times requests out itself through
  ``tick``: a deadline is ``timeout_factor`` (4) times the request's expected latency,
  within [``timeout_floor_s``, ``timeout_ceiling_s``], or ``initial_timeout_s`` before
  the source has delivered anything. Requests sent before a timeout time out in the
  same round; a source that times out (or loses late) ``stall_timeouts`` rounds in a
  row with no delivery between is dropped as stalled (``SourceStalled``): that is how a
  holder that stops answering without closing its connection is found.
- ``not_found``: the source lacks that chunk (a node mid-fetch serves what it has). It
  is never asked for that chunk again, and this counts no attempt: otherwise a few
  partial holders could use up a chunk's attempts while a full holder stays untried.
A failed chunk is retried on a source that has not failed it, while one is usable.
After ``max_attempts`` (3) failed attempts the fetch fails (``FetchFailed``, reason
``attempts``: the shell answers ``partition``). When no usable source remains for a
chunk (all removed, quarantined, stalled, or lacking it) the fetch fails with reason
``no_source``; a re-run resumes from what was stored. A source that disconnects
(``remove_source``) costs its chunks no attempt; they are simply reassigned.

Driving it. After every input, the shell takes the events (acting on each ``Cancel``)
and sends what ``next_requests`` returns; when idle it waits for the next result or
until ``next_deadline``, then calls ``tick``. Results are matched to requests by
(source, index): an answer that raced its own cancellation is still welcome (the
chunk was verified), and a late answer is taken as the answer to a newer request for
the same pair. Calls that break those rules (an index not in the fetch, a source never
added) raise ``LocalProtocolError``: they are bugs in the shell, not peer behaviour.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final, Generic, Literal, TypeVar

from hearthfile.errors import LocalProtocolError

S = TypeVar("S", bound=Hashable)

FailReason = Literal["bad_bytes", "error", "timeout", "not_found"]
FAIL_REASONS: Final = frozenset({"bad_bytes", "error", "timeout", "not_found"})
#: Why a chunk went back to the queue: a failed request, or its source went away.
RetryReason = Literal[FailReason, "removed", "quarantined", "stalled"]
CancelReason = Literal["duplicate", "timeout", "quarantined", "stalled"]
SourceState = Literal["active", "removed", "quarantined", "stalled"]

# Per-chunk states, one byte each, so a 1 TiB blob (4 Mi chunks) costs 4 MiB here.
_UNWANTED: Final = 0
_PENDING: Final = 1  # wanted, no request outstanding
_ACTIVE: Final = 2  # one or two requests outstanding
_DONE: Final = 3
#: The retry heap's entries are (tier, -1, index); one tier is left: chunks back
#: from a retry.
_RETRY: Final = 1
#: Places of the order, from the cursor on, looked at when seeking a chunk that only
#: the asked source holds: bounded, so a pick in a swarm costs at most this many
#: lookups per other source, whatever the blob's size.
RARE_SCAN: Final = 128
#: Queued chunks a partial holder is offered before the search moves past them: in a
#: swarm most of the queue is chunks it lacks, and scanning all of it for every
#: request would cost the square of the chunk count.
HEAP_SCAN: Final = 256


#: Chunks per window of ``windowed_order`` (16 MiB of 256 KiB chunks): wide enough that
#: fetchers of one blob at once, moving through the same window, take different chunks
#: of it (64! orders) and serve each other; narrow enough that the chunks a fetcher holds
#: ahead of its in-order content hash stay few (transfer/contenthash.py).
ORDER_WINDOW: Final = 64


def windowed_order(missing: Iterable[int], window: int, rng: random.Random) -> list[int]:
    """``missing`` window by window (chunks [0, window), [window, 2 window), ...), in a
    random order within each window."""
    if window < 1:
        raise ValueError("window must be >= 1")
    order: list[int] = []
    for _key, group in itertools.groupby(sorted(missing), key=lambda i: i // window):
        chunk = list(group)
        rng.shuffle(chunk)
        order.extend(chunk)
    return order


@dataclass(frozen=True, slots=True)
class ScheduleConfig:
    """Tuning of one fetch; the defaults follow DESIGN.md section 7."""

    max_attempts: int = 3
    initial_window: int = 4
    #: Half of file.read's max_concurrent (64 calls per connection): two fetches from
    #: one holder at full window still never draw ``busy``.
    max_window: int = 32
    #: Window = gain x bandwidth-delay product. The round trip measured is a lone
    #: chunk's; a run of them, read by the holder a hop at a time and stored by the
    #: writer in groups, holds its slots several times that long. With 2, a single
    #: holder on loopback sat idle between runs (gaps of 5-25 ms between arrivals
    #: took half the fetch); 8 keeps it busy. Slow sources still get windows in
    #: proportion to their rate.
    window_gain: float = 8.0
    #: Requests outstanding across all sources at once. Arrivals wait for the
    #: writer, so this bounds a fetch's chunks in memory (64 x 256 KiB = 16 MiB)
    #: however many sources it has.
    max_in_flight: int = 64
    #: A source with requests outstanding gets more only once this share of its
    #: window is free: requests then go out in runs, one call per run.
    refill_fraction: float = 0.5
    #: Delivery-rate samples the window keeps the best of (a sliding max).
    rate_samples: int = 8
    timeout_factor: float = 4.0
    timeout_floor_s: float = 2.0
    timeout_ceiling_s: float = 60.0
    initial_timeout_s: float = 20.0
    #: Latency assumed, for endgame decisions only, of a source not measured yet.
    unmeasured_latency_s: float = 0.5
    #: A request is late once it has taken this many times its expected latency ...
    late_factor: float = 2.0
    #: ... and at least this much longer than expected: on a fast link a few ms of
    #: scheduling jitter (a thread hop, a batched write) is not lateness.
    late_floor_s: float = 0.05
    #: Rounds of timeouts, with no delivery between them, after which a source is dropped.
    stall_timeouts: int = 2
    #: With an ``order``: once a partial holder shows up (``source_has``), take the
    #: chunks not yet asked for in a random order over the whole blob. A windowed order
    #: lets the fetcher hash the content as it goes; in a swarm, spreading out lets the
    #: fetchers hold different chunks long enough for their have-maps to tell.
    spread_in_swarm: bool = False

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.stall_timeouts < 1 or self.rate_samples < 1:
            raise ValueError("max_attempts, stall_timeouts and rate_samples must be >= 1")
        if not 1 <= self.initial_window <= self.max_window <= self.max_in_flight:
            raise ValueError("need 1 <= initial_window <= max_window <= max_in_flight")
        if not self.window_gain >= 1.0 or not self.timeout_factor >= 1.0:
            raise ValueError("window_gain and timeout_factor must be >= 1")
        if not 0 < self.timeout_floor_s <= self.timeout_ceiling_s:
            raise ValueError("need 0 < timeout_floor_s <= timeout_ceiling_s")
        if not self.initial_timeout_s > 0 or not self.unmeasured_latency_s > 0:
            raise ValueError("initial_timeout_s and unmeasured_latency_s must be positive")
        if not 0 < self.refill_fraction <= 1:
            raise ValueError("refill_fraction must be in (0, 1]")
        if not self.late_factor >= 1.0 or not self.late_floor_s >= 0:
            raise ValueError("late_factor must be >= 1 and late_floor_s >= 0")


# --- what the schedule asks of the shell ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request(Generic[S]):
    """Ask ``source`` for chunk ``index``.

    ``duplicate``: a second copy of a chunk already asked of another source (endgame,
    or a late stream head); whichever arrives first wins and the other is cancelled.
    """

    source: S
    index: int
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Cancel(Generic[S]):
    """Stop the request for ``index`` on ``source``; the schedule no longer waits for it."""

    source: S
    index: int
    reason: CancelReason


@dataclass(frozen=True, slots=True)
class ChunkRetried(Generic[S]):
    """Chunk ``index`` is queued again after its request on ``source`` ended without it."""

    index: int
    source: S
    reason: RetryReason
    failures: int


@dataclass(frozen=True, slots=True)
class SourceQuarantined(Generic[S]):
    """``source`` sent bytes that did not match chunk ``index``; never asked again."""

    source: S
    index: int
    reason: Literal["bad_bytes"] = "bad_bytes"


@dataclass(frozen=True, slots=True)
class SourceStalled(Generic[S]):
    """``source`` timed out (or lost late) round after round without delivering anything
    between; it is not asked again in this fetch unless added again."""

    source: S
    timeouts: int


@dataclass(frozen=True, slots=True)
class FetchComplete:
    """Every wanted chunk arrived (``chunks`` of them, ``nbytes`` in all)."""

    chunks: int
    nbytes: int


@dataclass(frozen=True, slots=True)
class FetchFailed:
    """Chunk ``index`` cannot be had: ``attempts`` -> partition, ``no_source`` -> unavailable."""

    index: int
    failures: int
    reason: Literal["attempts", "no_source"]


Event = (
    Cancel[S]
    | ChunkRetried[S]
    | SourceQuarantined[S]
    | SourceStalled[S]
    | FetchComplete
    | FetchFailed
)


@dataclass(frozen=True, slots=True)
class SourceStats:
    state: SourceState
    chunks: int  # chunks it delivered first
    nbytes: int  # bytes it delivered, duplicates included
    wasted_bytes: int  # bytes of chunks another source had already delivered
    failures: int  # failed requests (error, timeout, bad bytes)
    timeouts: int  # timed out, or lost a race because late
    throughput_bps: float  # best recent delivery rate, bytes/s; 0.0 until measured
    rtt_s: float | None  # smallest request-to-arrival time seen
    window: int
    outstanding: int


# --- internal state ------------------------------------------------------------------------


@dataclass(slots=True)
class _Outstanding:
    sent_at: float
    deadline: float
    expected_at: float  # when it should arrive, by the source's measurements
    late_at: float  # from then on another source may take a second copy
    delivered_before: int  # the source's delivered bytes when this was sent
    since: float  # start of this request's delivery-rate interval


@dataclass(slots=True)
class _Source:
    rank: float
    interval_start: float
    state: SourceState = "active"
    out: dict[int, _Outstanding] = field(default_factory=dict)
    lacks: set[int] = field(default_factory=set)
    #: The chunks its last have-map listed; None while unknown or once it holds all.
    have: set[int] | None = None
    rates: deque[float] = field(default_factory=deque)
    rtt_min: float | None = None
    arrivals: int = 0
    cap: int = 1  # ceiling set by failures, relaxed by one per arrival
    timeout_rounds: int = 0
    last_timeout_at: float = -math.inf
    chunks: int = 0
    nbytes: int = 0
    wasted_bytes: int = 0
    failures: int = 0
    timeouts: int = 0


class FetchSchedule(Generic[S]):
    """The chunk-to-source plan of one blob fetch."""

    def __init__(
        self,
        chunk_count: int,
        chunk_length: Callable[[int], int],
        missing: Iterable[int],
        rng: random.Random,
        config: ScheduleConfig | None = None,
        order: Sequence[int] | None = None,
    ) -> None:
        """``order``: the sequence in which to take new chunks (default: by index,
        which lets output stream). A random order spreads concurrent fetchers of
        one blob over different chunks, so they can serve each other (swarming)."""
        self.config = config or ScheduleConfig()
        self._order = None if order is None else list(order)
        #: Whether the order was spread over the whole blob (``spread_in_swarm``).
        self._spread = False
        self._rng = rng
        self._state = bytearray(chunk_count)
        for index in missing:
            if not 0 <= index < chunk_count:
                raise ValueError(f"chunk {index} is outside 0..{chunk_count - 1}")
            self._state[index] = _PENDING
        self._wanted = self._pending = self._state.count(_PENDING)
        first = self._state.find(_PENDING)
        self._typical_bytes = max(1, chunk_length(first)) if first >= 0 else 1
        self._sources: dict[S, _Source] = {}
        self._holders: dict[int, list[S]] = {}
        self._failures: dict[int, int] = {}
        self._failed_by: dict[int, set[S]] = {}
        # (tier, rank, index); rank keeps chunks skipped past the cursor in ``order``.
        # Stale entries (no longer pending) are skipped when popped.
        self._heap: list[tuple[int, int, int]] = []
        self._cursor = 0  # every pending chunk before it (in order) is in the heap
        self._head = first if first >= 0 else chunk_count
        self._done = 0
        self._done_bytes = 0
        self._outcome: Literal["running", "complete", "failed"] = "running"
        self._events: list[Event[S]] = []
        if self._wanted == 0:
            self._complete()

    # --- inputs ---------------------------------------------------------------------------

    def add_source(self, source: S, now: float) -> None:
        """``source`` holds the blob (or part of it). A quarantined source stays out."""
        known = self._sources.get(source)
        if known is not None and (known.state in ("active", "quarantined")):
            return
        fresh = _Source(self._rng.random(), now, cap=self.config.max_window)
        if known is not None:  # back after a disconnect or a stall: measure it afresh
            fresh.chunks, fresh.nbytes = known.chunks, known.nbytes
            fresh.wasted_bytes, fresh.failures = known.wasted_bytes, known.failures
            fresh.timeouts = known.timeouts
        self._sources[source] = fresh

    def remove_source(self, source: S, now: float) -> None:
        """``source`` is gone (disconnected): its chunks go to the others, no attempt lost."""
        src = self._sources.get(source)
        if src is None or src.state != "active" or self._outcome != "running":
            return
        src.state = "removed"
        self._drop_requests(source, src, "removed")
        self._check_sources()

    def chunk_arrived(self, source: S, index: int, nbytes: int, now: float) -> None:
        """The shell verified chunk ``index`` from ``source`` and stored it."""
        src = self._known(source, index)
        if self._outcome != "running":
            return
        request = src.out.pop(index, None)
        if request is not None:
            self._holders[index].remove(source)
        src.nbytes += nbytes
        if request is not None:
            self._measure(src, request, now)
        if self._state[index] == _DONE:
            src.wasted_bytes += nbytes
            return
        if self._state[index] == _PENDING:  # a late answer to a request given up on
            self._pending -= 1
        self._state[index] = _DONE
        src.chunks += 1
        self._done += 1
        self._done_bytes += nbytes
        stalled = False
        for other in self._holders.pop(index, []):
            loser = self._sources[other]
            late = loser.out.pop(index)
            self._events.append(Cancel(other, index, "duplicate"))
            if now >= late.late_at:  # lost because it was late: as good as a timeout
                self._slow_down(other, loser, late.sent_at, now)
                stalled = stalled or loser.state != "active"
        while self._head < len(self._state) and self._state[self._head] in (_UNWANTED, _DONE):
            self._head += 1
        if self._done == self._wanted:
            self._complete()
        elif stalled:
            self._check_sources()

    def chunk_failed(self, source: S, index: int, reason: FailReason, now: float) -> None:
        """The request for ``index`` on ``source`` ended without a usable chunk."""
        if reason not in FAIL_REASONS:
            raise LocalProtocolError(f"unknown failure reason {reason!r}")
        src = self._known(source, index)
        if self._outcome != "running":
            return
        request = src.out.pop(index, None)
        if request is not None:
            self._holders[index].remove(source)
        was = src.state
        if reason == "not_found":
            src.lacks.add(index)
        elif request is not None:  # an answer to a request already given up is moot
            self._count_failure(source, src, index, reason, request.sent_at, now)
        if reason == "bad_bytes" and src.state != "quarantined":
            src.state = "quarantined"
            self._events.append(SourceQuarantined(source, index))
            self._drop_requests(source, src, "quarantined")
        self._settle(index, source, reason)
        if src.state != was or reason == "not_found":
            self._check_sources()

    def source_has(self, source: S, indices: Iterable[int]) -> None:
        """``source`` now holds these chunks (a fresh have-map): it may be asked for
        them again after an earlier not_found (a holder that is itself fetching), and,
        until it holds every chunk, it is asked for nothing else."""
        src = self._sources.get(source)
        if src is not None:
            held = set(indices)
            src.lacks.difference_update(held)
            src.have = None if len(held) >= len(self._state) else held
            if src.have is not None and self.config.spread_in_swarm and not self._spread:
                self._spread_out()  # another fetcher of this blob

    def _spread_out(self) -> None:
        """Take the chunks not yet asked for in a random order over the whole blob from
        now on: a partial holder is another fetcher of this blob, and fetchers in step
        through the same window (``windowed_order``) hold little the others lack by the
        time their have-maps tell (a holder's map changes only when it commits)."""
        self._spread = True
        if self._order is None:  # index order: output streams, it stays
            return
        rest = [i for i in self._order[self._cursor :] if self._state[i] == _PENDING]
        self._rng.shuffle(rest)
        self._order, self._cursor = rest, 0

    def tick(self, now: float) -> None:
        """Time out every request whose deadline has passed (see ``next_deadline``)."""
        if self._outcome != "running":
            return
        expired = [
            (key, index)
            for key, src in self._sources.items()
            for index, request in src.out.items()
            if request.deadline <= now
        ]
        for key, index in expired:
            src = self._sources[key]
            request = src.out.pop(index, None)
            if request is None or self._outcome != "running":
                continue  # dropped with its stalled source a moment ago
            self._holders[index].remove(key)
            self._events.append(Cancel(key, index, "timeout"))
            self._count_failure(key, src, index, "timeout", request.sent_at, now)
            self._settle(index, key, "timeout")
            if src.state != "active":
                self._check_sources()

    # --- outputs --------------------------------------------------------------------------

    def next_requests(self, now: float) -> list[Request[S]]:
        """Fill every usable source's window; call after each input."""
        requests: list[Request[S]] = []
        if self._outcome != "running":
            return requests
        full: set[S] = set()
        topping: set[S] = set()  # sources given requests in this call: fill their windows
        in_flight = sum(len(src.out) for src in self._sources.values())
        while (
            in_flight < self.config.max_in_flight
            and (key := self._best_source(full, topping)) is not None
        ):
            src = self._sources[key]
            # Copying a late head chunk keeps in-order output flowing; with another
            # order nothing waits on the head, and a copy only costs its holder.
            late = self._late_head(key, src, now) if self._order is None else None
            index, duplicate = late, True
            if index is None:
                index, duplicate = self._pick_new(key, src), False
            if index is None:
                index, duplicate = self._pick_duplicate(key, src, now), True
            if index is None:
                full.add(key)
                continue
            self._send(key, src, index, now)
            in_flight += 1
            topping.add(key)
            requests.append(Request(key, index, duplicate))
        return requests

    def take_events(self) -> list[Event[S]]:
        """Events since the last call, in the order they happened."""
        events, self._events = self._events, []
        return events

    def next_deadline(self, now: float) -> float | None:
        """When to call ``tick`` (then ``next_requests``) if no other input comes first.

        That is the earliest request deadline or, once every chunk has been asked for,
        the moment a lone request turns late and may get an endgame second copy.
        """
        if self._outcome != "running":
            return None
        endgame = self._pending == 0
        times = [
            r.late_at if endgame and now < r.late_at and len(self._holders[i]) == 1 else r.deadline
            for src in self._sources.values()
            for i, r in src.out.items()
        ]
        return min(times, default=None)

    @property
    def outcome(self) -> Literal["running", "complete", "failed"]:
        return self._outcome

    @property
    def spread(self) -> bool:
        """Whether the order was spread over the whole blob (``spread_in_swarm``)."""
        return self._spread

    @property
    def remaining(self) -> int:
        """Wanted chunks not yet arrived."""
        return self._wanted - self._done

    @property
    def done_bytes(self) -> int:
        return self._done_bytes

    def window(self, source: S) -> int:
        return self._window(self._sources[source])

    def stats(self) -> dict[S, SourceStats]:
        return {
            key: SourceStats(
                src.state,
                src.chunks,
                src.nbytes,
                src.wasted_bytes,
                src.failures,
                src.timeouts,
                max(src.rates, default=0.0),
                src.rtt_min,
                self._window(src),
                len(src.out),
            )
            for key, src in self._sources.items()
        }

    # --- measurement ----------------------------------------------------------------------

    def _measure(self, src: _Source, request: _Outstanding, now: float) -> None:
        latency = now - request.sent_at
        src.rtt_min = latency if src.rtt_min is None else min(src.rtt_min, latency)
        interval = now - request.since
        if interval > 0:
            src.rates.append((src.nbytes - request.delivered_before) / interval)
            if len(src.rates) > self.config.rate_samples:
                src.rates.popleft()
        src.interval_start = now
        src.arrivals += 1
        src.cap = min(src.cap + 1, self.config.max_window)
        src.timeout_rounds = 0

    def _window(self, src: _Source) -> int:
        cfg = self.config
        window = cfg.initial_window
        if src.rates and src.rtt_min is not None:
            bdp = max(src.rates) * src.rtt_min / self._typical_bytes
            estimate = math.ceil(cfg.window_gain * bdp)
            window = estimate if src.arrivals >= cfg.initial_window else max(estimate, window)
        return max(1, min(window, src.cap, cfg.max_window))

    def _expected_latency(self, src: _Source, ahead: int) -> float | None:
        """Time a request sent now should take: round trip plus the chunks ahead of it."""
        if not src.rates or src.rtt_min is None:
            return None
        rate = max(src.rates)
        return src.rtt_min + ahead * self._typical_bytes / rate if rate > 0 else None

    # --- assignment -----------------------------------------------------------------------

    def _best_source(self, full: set[S], topping: set[S]) -> S | None:
        best: tuple[float, int, float] | None = None
        chosen: S | None = None
        for key, src in self._sources.items():
            if src.state != "active" or key in full or not self._has_room(src, key in topping):
                continue
            eta = self._expected_latency(src, len(src.out))
            rank = (-1.0 if eta is None else eta, len(src.out), src.rank)
            if best is None or rank < best:
                best, chosen = rank, key
        return chosen

    def _has_room(self, src: _Source, topping_up: bool) -> bool:
        """May ``src`` take another request now? Below its window, and either idle,
        in the middle of a top-up, or with ``refill_fraction`` of its window free."""
        busy, window = len(src.out), self._window(src)
        if busy >= window:
            return False
        if busy == 0 or topping_up:
            return True
        return window - busy >= max(1, math.floor(window * self.config.refill_fraction))

    def _eligible(self, key: S, src: _Source, index: int) -> bool:
        """May ``key`` be asked for ``index``, which no one else is fetching?"""
        if index in src.lacks or (src.have is not None and index not in src.have):
            return False
        failed = self._failed_by.get(index)
        if not failed or key not in failed:
            return True
        # Retry elsewhere while some other usable source has not failed this chunk.
        return not any(
            other.state == "active" and k not in failed and index not in other.lacks
            for k, other in self._sources.items()
        )

    def _pick_new(self, key: S, src: _Source) -> int | None:
        """Lowest-ranked chunk with no request out that ``key`` may be asked for; in a
        swarm, one that no other source holds if there is one near the front."""
        held = self._held_by_others(key)
        skipped: list[tuple[int, int, int]] = []
        found: int | None = None
        fallback: tuple[int, int, int] | None = None  # eligible, but others hold it
        while self._heap and len(skipped) < HEAP_SCAN:
            entry = heapq.heappop(self._heap)
            index = entry[2]
            if self._state[index] != _PENDING:
                continue
            if not self._eligible(key, src, index):
                skipped.append(entry)
            elif held is None or entry[1] < 0 or not any(index in h for h in held):
                found = index  # a retry, or urgent, or nobody else holds it
                break
            elif fallback is None:
                fallback = entry
            else:
                skipped.append(entry)
        if found is None and held is not None:
            found = self._pick_rare(key, src, held)
        if found is None and fallback is not None:
            found, fallback = fallback[2], None
        if fallback is not None:
            skipped.append(fallback)
        for entry in skipped:
            heapq.heappush(self._heap, entry)
        while found is None:
            index = self._next_pending()
            if index < 0:
                break
            if self._eligible(key, src, index):
                found = index
            else:
                heapq.heappush(self._heap, (_RETRY, self._cursor, index))
        return found

    def _held_by_others(self, key: S) -> list[set[int]] | None:
        """The have-maps of the other usable sources, when all of them are partial
        holders (a swarm: the others are fetching too); otherwise None."""
        held: list[set[int]] = []
        for k, other in self._sources.items():
            if k != key and other.state == "active":
                if other.have is None:
                    return None
                held.append(other.have)
        return held or None

    def _pick_rare(self, key: S, src: _Source, held: list[set[int]]) -> int | None:
        """A chunk none of the others holds, among the next ``RARE_SCAN`` places of the
        order: what they hold is better fetched from them, which leaves this source
        (often the one origin) for what only it can give."""
        for index in self._upcoming():
            if not any(index in h for h in held) and self._eligible(key, src, index):
                return index
        return None

    def _upcoming(self) -> Iterator[int]:
        """Pending chunks among the next ``RARE_SCAN`` places from the cursor, in
        ``order``, without moving the cursor."""
        end = self._cursor + RARE_SCAN
        if self._order is None:
            index = self._state.find(_PENDING, self._cursor, end)
            while index >= 0:
                yield index
                index = self._state.find(_PENDING, index + 1, end)
            return
        for index in itertools.islice(self._order, self._cursor, end):
            if self._state[index] == _PENDING:
                yield index

    def _next_pending(self) -> int:
        """The next pending chunk past the cursor, in ``order`` (-1 when none)."""
        if self._order is None:
            index = self._state.find(_PENDING, self._cursor)
            if index >= 0:
                self._cursor = index + 1
            return index
        while self._cursor < len(self._order):
            index = self._order[self._cursor]
            self._cursor += 1
            if self._state[index] == _PENDING:
                return index
        return -1

    def _may_copy(self, key: S, src: _Source, index: int) -> bool:
        """May ``key`` take a second copy of ``index``? Copies are extra: only from a
        source that neither lacks nor failed the chunk, and not once the chunk has used
        up its attempts (then the copy still out decides)."""
        holders = self._holders[index]
        failed = self._failed_by.get(index, ())
        return (
            len(holders) == 1
            and holders[0] != key
            and index not in src.lacks
            and (src.have is None or index in src.have)
            and key not in failed
            and self._failures.get(index, 0) < self.config.max_attempts
        )

    def _late_head(self, key: S, src: _Source, now: float) -> int | None:
        """The first missing chunk, if its only request is late: the stream waits on it."""
        index = self._head
        if index >= len(self._state) or self._state[index] != _ACTIVE:
            return None
        if not self._may_copy(key, src, index):
            return None
        return index if now >= self._sources[self._holders[index][0]].out[index].late_at else None

    def _pick_duplicate(self, key: S, src: _Source, now: float) -> int | None:
        """Endgame: a chunk outstanding elsewhere that ``key`` would deliver sooner."""
        own = self._expected_latency(src, len(src.out))
        own_eta = now + (self.config.unmeasured_latency_s if own is None else own)
        best: tuple[float, int] | None = None
        for index, holders in self._holders.items():
            if not self._may_copy(key, src, index):
                continue
            request = self._sources[holders[0]].out[index]
            holder_eta = math.inf if now >= request.late_at else request.expected_at
            if own_eta < holder_eta and (best is None or (holder_eta, -index) > best):
                best = (holder_eta, -index)
        return None if best is None else -best[1]

    def _send(self, key: S, src: _Source, index: int, now: float) -> None:
        cfg = self.config
        expected = self._expected_latency(src, len(src.out))
        if expected is None:
            expected, timeout = cfg.unmeasured_latency_s, cfg.initial_timeout_s
        else:
            timeout = min(
                max(cfg.timeout_factor * expected, cfg.timeout_floor_s), cfg.timeout_ceiling_s
            )
        if not src.out:  # an idle source: its delivery interval starts now
            src.interval_start = now
        src.out[index] = _Outstanding(
            now,
            now + timeout,
            now + expected,
            now + max(cfg.late_factor * expected, expected + cfg.late_floor_s),
            src.nbytes,
            src.interval_start,
        )
        self._holders.setdefault(index, []).append(key)
        if self._state[index] == _PENDING:
            self._state[index] = _ACTIVE
            self._pending -= 1

    # --- failures -------------------------------------------------------------------------

    def _count_failure(
        self, key: S, src: _Source, index: int, reason: FailReason, sent_at: float, now: float
    ) -> None:
        self._failures[index] = self._failures.get(index, 0) + 1
        self._failed_by.setdefault(index, set()).add(key)
        src.failures += 1
        if reason == "error":
            src.cap = max(1, self._window(src) // 2)
        elif reason == "timeout":
            self._slow_down(key, src, sent_at, now)

    def _slow_down(self, key: S, src: _Source, sent_at: float, now: float) -> None:
        """A request on ``key`` timed out, or lost a race because it was late."""
        src.timeouts += 1
        src.cap = 1  # probation: one request at a time until it delivers again
        # Requests sent before the last timeout were sent blind: they time out in the
        # same round. Only one sent after it (on probation) opens a new round.
        if sent_at >= src.last_timeout_at:
            src.timeout_rounds += 1
            src.last_timeout_at = now
        if src.timeout_rounds >= self.config.stall_timeouts and src.state == "active":
            src.state = "stalled"
            self._events.append(SourceStalled(key, src.timeouts))
            self._drop_requests(key, src, "stalled")

    def _drop_requests(
        self, key: S, src: _Source, reason: Literal["removed", "quarantined", "stalled"]
    ) -> None:
        """Give up every request outstanding on ``key``; their chunks go back to the queue.

        A removed source is gone, so there is nothing to cancel; the others get a Cancel.
        """
        for index in list(src.out):
            del src.out[index]
            self._holders[index].remove(key)
            if reason != "removed":
                self._events.append(Cancel(key, index, reason))
            self._settle(index, key, reason)

    def _settle(self, index: int, source: S, reason: RetryReason) -> None:
        """After a request for ``index`` ended without it: queue it again, or fail."""
        if self._state[index] != _ACTIVE or self._holders.get(index) or self._outcome != "running":
            return
        self._holders.pop(index, None)
        failures = self._failures.get(index, 0)
        if failures >= self.config.max_attempts:
            self._fail(index, failures, "attempts")
            return
        self._state[index] = _PENDING
        self._pending += 1
        heapq.heappush(self._heap, (_RETRY, -1, index))
        self._events.append(ChunkRetried(index, source, reason, failures))

    def _check_sources(self) -> None:
        """Fail the fetch if some chunk still wanted has no usable source left."""
        if self._outcome != "running":
            return
        usable = [src for src in self._sources.values() if src.state == "active"]
        if not usable:
            self._fail(self._head, self._failures.get(self._head, 0), "no_source")
            return
        lacking = set.intersection(*(src.lacks for src in usable))
        for index in sorted(lacking):
            if self._state[index] == _PENDING:
                self._fail(index, self._failures.get(index, 0), "no_source")
                return

    def _fail(self, index: int, failures: int, reason: Literal["attempts", "no_source"]) -> None:
        self._outcome = "failed"
        self._events.append(FetchFailed(index, failures, reason))

    def _complete(self) -> None:
        self._outcome = "complete"
        self._events.append(FetchComplete(self._done, self._done_bytes))

    def _known(self, source: S, index: int) -> _Source:
        if not 0 <= index < len(self._state) or self._state[index] == _UNWANTED:
            raise LocalProtocolError(f"chunk {index} is not part of this fetch")
        src = self._sources.get(source)
        if src is None:
            raise LocalProtocolError(f"{source!r} was never added as a source")
        return src
