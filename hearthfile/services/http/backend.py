"""What the HTTP gateway needs from the node: ``GatewayBackend`` (an interface).

The gateway speaks HTTP and nothing else; the node implements this Protocol
(``node_gateway.NodeGateway``) over its store, its transfer manager and its
event log. Tests may supply any object of this shape. Every byte a backend
yields has been verified against its chunk CID.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from hearthfile.blobs.chunker import Manifest
from hearthfile.cids import Cid


class GatewayError(Exception):
    """A request the backend cannot serve: ``status`` and a one-line ``detail``.

    ``retry_after_s`` (for 502/503/504) becomes a ``Retry-After`` header."""

    def __init__(
        self, status: int, error: str, detail: str = "", *, retry_after_s: int | None = None
    ) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class BlobMeta:
    """A blob as the gateway serves it: its manifest and the advisory name and mime."""

    cid: Cid
    manifest: Manifest
    name: str | None
    mime: str | None
    local: bool  # complete in the store (else: to be fetched on a miss)

    @property
    def size(self) -> int:
        return self.manifest.size


@dataclass(frozen=True, slots=True)
class Added:
    """A blob the gateway added: the 201 answer of an upload."""

    cid: Cid
    size: int
    name: str | None
    mime: str | None
    content: Cid

    def as_json(self) -> dict[str, Any]:
        return {
            "cid": self.cid,
            "size": self.size,
            "name": self.name,
            "mime": self.mime,
            "content": self.content,
        }


class BlobSink(Protocol):
    """A blob being added from a byte stream: ``write`` pieces, then ``finish``."""

    async def write(self, data: bytes) -> None: ...

    async def finish(self) -> Added: ...


class GatewayBackend(Protocol):
    # -- reads ---------------------------------------------------------------
    async def blob(self, cid: Cid, *, fetch: bool) -> BlobMeta:
        """The blob's manifest and names; when not held and ``fetch``, the manifest
        comes from peers (GatewayError 404 no holder, 502/504 unreachable); when
        not held and not ``fetch``, GatewayError 412."""
        ...

    async def read(
        self, meta: BlobMeta, start: int, end: int, write: Callable[[memoryview], Awaitable[None]]
    ) -> None:
        """``write`` bytes [start, end) in order, verified; fetched from peers as they
        come where the blob is not local. Raises GatewayError before the first
        byte; any exception after it makes the gateway abort the connection."""
        ...

    async def chunk(self, cid: Cid) -> bytes:
        """One verified chunk held here (GatewayError 404 when not)."""
        ...

    async def manifest_bytes(self, cid: Cid) -> bytes:
        """The canonical manifest bytes of a blob held here (complete or partial)."""
        ...

    async def list_blobs(self, prefix: str, after: str, limit: int) -> list[dict[str, Any]]: ...

    # -- writes --------------------------------------------------------------
    def open_sink(
        self, name: str | None, mime: str | None
    ) -> contextlib.AbstractAsyncContextManager[BlobSink]:
        """A blob added from the bytes written to the sink, streamed to the store;
        leaving the context without ``finish`` keeps nothing."""
        ...

    async def plan(self, manifest: Manifest) -> list[int]:
        """Indices of the manifest's chunks not held here."""
        ...

    async def put_chunk(self, cid: Cid, data: bytes) -> None: ...

    async def commit(self, manifest: Manifest) -> Added:
        """Make the blob visible once every chunk is here and its content verifies."""
        ...

    async def remove(self, cid: Cid) -> None: ...

    async def set_pin(self, cid: Cid, pinned: bool) -> None: ...

    # -- node ----------------------------------------------------------------
    def status(self) -> dict[str, Any]: ...

    def metrics(self) -> list[Metric]: ...

    def events_since(self, after: int) -> list[dict[str, Any]]:
        """Events with ids above ``after`` as ``{id, time, type, data}``, oldest first."""
        ...

    async def wait_events(self, after: int) -> None:
        """Return once an event with an id above ``after`` exists."""
        ...


@dataclass(frozen=True, slots=True)
class Metric:
    """One Prometheus sample: ``name`` without the ``hearthfile_`` prefix."""

    name: str
    kind: str  # counter | gauge
    help: str
    value: float
