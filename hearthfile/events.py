"""Typed node events and the one bus that fans them out (trio shell).

Parts of the node report facts as frozen dataclasses named as facts
(``PeerConnected``, ``TransferDone``, ``SourceQuarantined``...) to one
``EventBus``. The bus numbers each event (ids rise by one from 1), keeps the
most recent ``capacity`` in a ring, wakes whoever waits for news, and hands
every event to its subscribers as it happens: ``Counters`` (what metrics read)
is one, the node's peer wiring another. Readers pull: ``recorded(after)`` now,
``wait_since(after, timeout_s)`` as a long poll (HTTP ``/events``), ``follow``
forever (``hearthfile events --follow``).

Memory is bounded by the capacity whatever the event rate; a reader that falls
behind by more than that misses the oldest events and sees the gap in the ids.

Each event has a wire ``kind`` (``"peer.up"``) and ``data()``: its fields as
msgpack- and JSON-friendly values (NodeIds as text). ``Entry.to_wire()`` is the
shape ``node.events`` sends: ``{"seq", "at", "event", **data}``.

To add an event: a dataclass here with a ``kind``, ``publish`` it where the
fact happens, and, if metrics should count it, a line in ``Counters.observe``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Literal

import trio

from hearthfile.cids import Cid
from hearthfile.identity import NodeId

DEFAULT_CAPACITY: Final = 1000

Direction = Literal["inbound", "outbound"]


class _Fact:
    """What every event has: a wire kind and its fields as plain values."""

    __slots__ = ()
    kind: ClassVar[str]

    def data(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


def _plain(value: object) -> Any:
    if isinstance(value, NodeId):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


# -- peers -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerConnected(_Fact):
    """The first connection to ``peer`` is up."""

    kind: ClassVar[str] = "peer.up"
    peer: NodeId
    remote: str
    direction: Direction

    def data(self) -> dict[str, Any]:
        return {"node_id": str(self.peer), "remote": self.remote, "direction": self.direction}


@dataclass(frozen=True, slots=True)
class PeerDisconnected(_Fact):
    """The last connection to ``peer`` closed."""

    kind: ClassVar[str] = "peer.down"
    peer: NodeId
    reason: str

    def data(self) -> dict[str, Any]:
        return {"node_id": str(self.peer), "reason": self.reason}


PeerEvent = PeerConnected | PeerDisconnected


# -- trust -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrustChanged(_Fact):
    """The trust book now gives ``node`` the level ``after`` (``before`` it had)."""

    kind: ClassVar[str] = "trust.changed"
    node: NodeId
    before: str
    after: str

    def data(self) -> dict[str, Any]:
        return {"node_id": str(self.node), "before": self.before, "after": self.after}


# -- the store ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlobEvicted(_Fact):
    """GC removed this blob to bring the store back under its limits."""

    kind: ClassVar[str] = "blob.evicted"
    cid: Cid


# -- transfers ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TransferStarted(_Fact):
    kind: ClassVar[str] = "transfer.started"
    cid: Cid


@dataclass(frozen=True, slots=True)
class TransferDone(_Fact):
    """A fetch made ``cid`` (or the span asked for) complete here."""

    kind: ClassVar[str] = "transfer.done"
    cid: Cid
    size: int
    sources: int
    seconds: float


@dataclass(frozen=True, slots=True)
class TransferFailed(_Fact):
    kind: ClassVar[str] = "transfer.failed"
    cid: Cid
    code: str
    detail: str


@dataclass(frozen=True, slots=True)
class TransferCancelled(_Fact):
    """A fetch stopped before its end by a cancel (``hearthfile cancel``), its caller
    going away, or the node stopping: not a failure, and no wire error."""

    kind: ClassVar[str] = "transfer.cancelled"
    cid: Cid


@dataclass(frozen=True, slots=True)
class TransferShares(_Fact):
    """Which source gave how many chunks of one fetch, and the bytes it cost
    beyond them: copies that lost a race, and bytes that failed their hash."""

    kind: ClassVar[str] = "transfer.shares"
    cid: Cid
    shares: Mapping[str, int]
    fetched_bytes: int = 0
    redundant_bytes: int = 0
    failed_hash_bytes: int = 0


@dataclass(frozen=True, slots=True)
class SourceQuarantined(_Fact):
    """``source`` sent bytes that did not match their CID: not asked again this fetch."""

    kind: ClassVar[str] = "source.quarantined"
    source: NodeId
    cid: Cid
    chunk: int
    reason: str = "bad bytes"

    def data(self) -> dict[str, Any]:
        return {"node_id": str(self.source), "cid": self.cid, "chunk": self.chunk,
                "reason": self.reason}  # fmt: skip


@dataclass(frozen=True, slots=True)
class BlobPushed(_Fact):
    kind: ClassVar[str] = "push.done"
    cid: Cid
    target: NodeId
    sent: int
    skipped: int
    bytes_sent: int


# -- gossip ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CidsAdvertised(_Fact):
    """An origin (``"self"`` for this node) now holds ``added`` and no longer ``removed``."""

    kind: ClassVar[str] = "file.cid.advertised"
    origin: str
    added: tuple[Cid, ...]
    removed: tuple[Cid, ...]
    full: bool | None = None

    def data(self) -> dict[str, Any]:
        out: dict[str, Any] = {"origin": self.origin, "added": list(self.added),
                               "removed": list(self.removed)}  # fmt: skip
        if self.full is not None:
            out["full"] = self.full
        return out


@dataclass(frozen=True, slots=True)
class OriginExpired(_Fact):
    kind: ClassVar[str] = "gossip.origin_expired"
    origin: NodeId

    def data(self) -> dict[str, Any]:
        return {"origin": str(self.origin)}


@dataclass(frozen=True, slots=True)
class PeerLearned(_Fact):
    kind: ClassVar[str] = "gossip.peer_learned"
    node: NodeId
    addresses: tuple[str, ...]

    def data(self) -> dict[str, Any]:
        return {"node_id": str(self.node), "addresses": list(self.addresses)}


@dataclass(frozen=True, slots=True)
class RecordRejected(_Fact):
    kind: ClassVar[str] = "gossip.record_rejected"
    sender: NodeId
    reason: str


Event = (
    PeerConnected
    | PeerDisconnected
    | TrustChanged
    | BlobEvicted
    | TransferStarted
    | TransferDone
    | TransferFailed
    | TransferCancelled
    | TransferShares
    | SourceQuarantined
    | BlobPushed
    | CidsAdvertised
    | OriginExpired
    | PeerLearned
    | RecordRejected
)
Publish = Callable[[Event], None]


# -- the bus -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One recorded event: its id (rising by one from 1) and wall-clock time."""

    id: int
    at: float
    event: Event

    def to_wire(self) -> dict[str, Any]:
        return {"seq": self.id, "at": self.at, "event": self.event.kind, **self.event.data()}


class EventBus:
    """Numbers, keeps and fans out the node's events (see the module docstring)."""

    def __init__(
        self, capacity: int = DEFAULT_CAPACITY, clock: Callable[[], float] = time.time
    ) -> None:
        if capacity < 1:
            raise ValueError("an event bus keeps at least one event")
        self._entries: deque[Entry] = deque(maxlen=capacity)
        self._last = 0
        self._clock = clock
        self._changed = trio.Event()
        self._subscribers: list[Publish] = []

    @property
    def last_id(self) -> int:
        """The id of the newest event (0 before the first)."""
        return self._last

    def subscribe(self, subscriber: Publish) -> None:
        """Call ``subscriber(event)`` for every event published from now on. It runs
        inside ``publish``: it must be quick and must not raise."""
        self._subscribers.append(subscriber)

    def publish(self, event: Event) -> None:
        self._last += 1
        self._entries.append(Entry(self._last, self._clock(), event))
        for subscriber in self._subscribers:
            subscriber(event)
        self._changed.set()
        self._changed = trio.Event()

    def recorded(self, after: int = 0) -> list[Entry]:
        """The kept events with an id above ``after``, oldest first."""
        if not self._entries or after >= self._last:
            return []
        skip = max(0, after - self._entries[0].id + 1)
        return [e for i, e in enumerate(self._entries) if i >= skip]

    async def wait_since(self, after: int, timeout_s: float) -> list[Entry]:
        """``recorded(after)``, waiting up to ``timeout_s`` for one when there is none
        yet (a long poll); an empty list when the time ran out."""
        with trio.move_on_after(timeout_s):
            while after >= self._last:
                await self._changed.wait()
        return self.recorded(after)

    async def follow(self, after: int = 0) -> AsyncIterator[Entry]:
        """Events after ``after``, then new ones as they come, until cancelled."""
        while True:
            for entry in await self.wait_since(after, math.inf):
                after = entry.id
                yield entry


# -- counters ----------------------------------------------------------------------------


@dataclass(slots=True)
class Counters:
    """What the node has done since it started, for metrics: totals that only rise,
    and ``transfers_active``, a gauge. Fed by the bus (``observe``) and, for per-chunk
    byte counts no event carries, by the part that moves the bytes (``add_served``)."""

    bytes_served: int = 0
    bytes_fetched: int = 0
    bytes_uploaded: int = 0
    failed_hash_bytes: int = 0
    redundant_bytes: int = 0
    sources_quarantined: int = 0
    transfers_done: int = 0
    transfers_failed: int = 0
    transfers_active: int = 0
    gc_evictions: int = 0
    gossip_records: int = 0
    gossip_rejected: int = 0
    peers_connected: int = 0
    _peers: set[NodeId] = field(default_factory=set, repr=False)

    def observe(self, event: Event) -> None:
        match event:
            case TransferStarted():
                self.transfers_active += 1
            case TransferDone():
                self.transfers_active -= 1
                self.transfers_done += 1
            case TransferFailed():
                self.transfers_active -= 1
                self.transfers_failed += 1
            case TransferCancelled():
                self.transfers_active -= 1
            case TransferShares():
                self.bytes_fetched += event.fetched_bytes
                self.redundant_bytes += event.redundant_bytes
                self.failed_hash_bytes += event.failed_hash_bytes
            case SourceQuarantined():
                self.sources_quarantined += 1
            case BlobPushed():
                self.bytes_uploaded += event.bytes_sent
            case BlobEvicted():
                self.gc_evictions += 1
            case CidsAdvertised() if event.origin != "self":
                self.gossip_records += 1
            case RecordRejected():
                self.gossip_rejected += 1
            case PeerConnected():
                self._peers.add(event.peer)
                self.peers_connected = len(self._peers)
            case PeerDisconnected():
                self._peers.discard(event.peer)
                self.peers_connected = len(self._peers)
            case _:
                pass

    def add_served(self, nbytes: int) -> None:
        self.bytes_served += nbytes

    def snapshot(self) -> dict[str, int]:
        """The counters by name (``transfers_active`` and ``peers_connected`` are gauges)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if not f.name.startswith("_")}  # fmt: skip
