"""What the node's commands answer: one typed result per command (pure).

The node service returns these; the bus seam encodes them once (``to_wire``) and
the CLI's client decodes them once (``from_wire``), so a command's result has
the same type whether the CLI reached a daemon or opened the store itself.

Fields carry their unit as metadata: ``TIME`` fields are seconds since the epoch
(shown as ISO 8601), ``BYTES`` fields are byte counts (shown in human units in
text, as plain integers in JSON).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from hearthfile.cids import Cid
from hearthfile.errors import RemoteProtocolError

TIME: Final = {"unit": "time"}
BYTES: Final = {"unit": "bytes"}

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class BlobEntry:
    """A stored blob, as ``ls`` and ``stat`` show it."""

    cid: Cid
    size: int = field(metadata=BYTES)
    chunks: int
    content: Cid
    pinned: bool
    complete: bool
    name: str | None
    mime: str | None
    added_at: float = field(metadata=TIME)
    last_access: float = field(metadata=TIME)


@dataclass(frozen=True, slots=True)
class Added:
    cids: list[Cid]


@dataclass(frozen=True, slots=True)
class AddProgress:
    """Bytes of the files of one ``add`` stored so far."""

    done_bytes: int = field(metadata=BYTES)
    total_bytes: int = field(metadata=BYTES)


@dataclass(frozen=True, slots=True)
class PinState:
    cid: Cid
    pinned: bool


@dataclass(frozen=True, slots=True)
class Removed:
    cid: Cid
    bytes_freed: int = field(metadata=BYTES)


@dataclass(frozen=True, slots=True)
class GcResult:
    removed: list[Cid]
    bytes_freed: int = field(metadata=BYTES)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    chunks_checked: int
    manifests_checked: int
    corrupt: list[str]
    missing: list[str]
    manifests_restored: int
    untracked_removed: int
    #: Files the index did not know, taken back rather than deleted.
    adopted: int
    #: Blobs a corrupt or missing file belonged to.
    affected: list[Cid]
    clean: bool
    #: With ``--repair``: blobs fetched again whole from peers, blobs no reachable
    #: peer holds, and the others as ``"CID: code: reason"``.
    repaired: list[Cid] = field(default_factory=list)
    no_source: list[Cid] = field(default_factory=list)
    repair_failed: list[str] = field(default_factory=list)

    @property
    def unrepaired(self) -> bool:
        return bool(self.no_source or self.repair_failed)


@dataclass(frozen=True, slots=True)
class Fetched:
    """A blob (or the span of it asked for) is in the store."""

    cid: Cid
    size: int = field(metadata=BYTES)
    name: str | None
    #: The node wrote the blob to the ``output`` file the caller named.
    written: bool = False


@dataclass(frozen=True, slots=True)
class Pushed:
    cid: Cid
    sent: int
    skipped: int


@dataclass(frozen=True, slots=True)
class TransferState:
    """A transfer under way (also its progress reports)."""

    cid: Cid
    total_bytes: int = field(metadata=BYTES)
    done_bytes: int = field(metadata=BYTES)
    chunks_total: int
    chunks_done: int
    sources: int


@dataclass(frozen=True, slots=True)
class PeerRow:
    node_id: str
    remote: str
    direction: str
    trust: str
    connected_since: float | None = field(metadata=TIME)
    bytes_in: int = field(metadata=BYTES)
    bytes_out: int = field(metadata=BYTES)


@dataclass(frozen=True, slots=True)
class Holder:
    """A known source of a blob; ``online`` when the node is connected to it now."""

    node_id: str
    age_s: float
    online: bool


@dataclass(frozen=True, slots=True)
class NodeStatus:
    node_id: str
    version: str
    pid: int
    listen: str | None
    http: str | None  # the HTTP gateway's address; None when off
    uptime_s: float
    peers: int
    blobs: int
    bytes_stored: int = field(metadata=BYTES)
    data_dir: str
    known_sources: int


@dataclass(frozen=True, slots=True)
class TrustChanged:
    """``trust`` and ``untrust``: the peer's level now."""

    node_id: str
    level: str


@dataclass(frozen=True, slots=True)
class TrustRow:
    """One peer of ``trusted``: its level and where the trust came from."""

    node_id: str
    level: str
    source: str
    introducer: str | None
    since: float = field(metadata=TIME)


@dataclass(frozen=True, slots=True)
class Invitation:
    token: str
    level: str
    uses: int
    expires_at: float = field(metadata=TIME)
    addresses: list[str]


@dataclass(frozen=True, slots=True)
class Joined:
    inviter: str
    level: str


@dataclass(frozen=True, slots=True)
class Cancelled:
    cid: Cid
    cancelled: bool


@dataclass(frozen=True, slots=True)
class DownloadRecord:
    """A URL download (DESIGN.md section 12); its times are ISO 8601 already."""

    id: str
    url: str
    name: str
    status: str
    progress: float
    downloaded_bytes: int = field(metadata=BYTES)
    size: int | None = field(metadata=BYTES)
    speed_bps: int
    cid: str | None
    error: str | None
    created_at: str
    updated_at: str
    source: str


@dataclass(frozen=True, slots=True)
class DownloadRemoved:
    id: str
    removed: bool


def to_wire(result: Any) -> dict[str, Any]:
    """A result as a msgpack- and JSON-friendly map."""
    return {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}


def from_wire(kind: type[R], value: object) -> R:
    """Decode a map the node sent as a ``kind``; extra keys are ignored (newer nodes)."""
    if not isinstance(value, Mapping):
        raise RemoteProtocolError(f"{kind.__name__}: expected a map, got {type(value).__name__}")
    fields = dataclasses.fields(kind)  # type: ignore[arg-type]
    missing = [f.name for f in fields if f.name not in value]
    if missing:
        raise RemoteProtocolError(f"{kind.__name__}: missing {', '.join(missing)}")
    return kind(**{f.name: value[f.name] for f in fields})

