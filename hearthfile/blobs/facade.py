"""AsyncStore: the blob store as trio code sees it (trio shell over ``BlobStore``).

Every blocking call (SQLite, reads, hashing, fsync) runs in a worker thread,
and store errors become wire errors here, once, for every caller that answers
a peer or the CLI (file service, node service, transfer):

=================  =====================  =========================================
store error        wire code              why
=================  =====================  =========================================
not_found          not_found              the blob or chunk is not here
hash_mismatch      not_found              a corrupt file is moved aside, never served
disk_full          capacity_exceeded      the caller may retry elsewhere or later
manifest_invalid   bad_request            the manifest the caller gave is not valid
io_error           internal               our own failure; logged here, text kept local
PinnedError        bad_request            the caller must unpin first
=================  =====================  =========================================

Code that needs several store steps in one thread hop (a hop costs more than
hashing a chunk, PERF-NOTES.md) passes a function to ``run``; the blocking
store stays reachable as ``sync`` for that.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Concatenate, ParamSpec, TypeVar

import trio

from hearthfile.blobs.chunker import BlobError, Manifest
from hearthfile.blobs.store import BlobInfo, BlobStore, GcReport, PinnedError, VerifyReport
from hearthfile.cids import Cid
from hearthfile.errors import ServiceError

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

#: Store error code -> wire error code (the table in the module docstring).
WIRE_CODES: dict[str, str] = {
    "not_found": "not_found",
    "hash_mismatch": "not_found",
    "disk_full": "capacity_exceeded",
    "manifest_invalid": "bad_request",
    "io_error": "internal",
}


def service_error(exc: BlobError | PinnedError) -> ServiceError:
    """The wire error a caller sees for a store error."""
    if isinstance(exc, PinnedError):
        return ServiceError("bad_request", str(exc))
    code = WIRE_CODES[exc.code]
    if code == "internal":
        log.error("store error: %s", exc)
        return ServiceError("internal", "storage error")
    if exc.code == "disk_full":
        return ServiceError(code, f"disk full: {exc.detail}" if exc.detail else "disk full")
    return ServiceError(code, exc.detail)


def holding_blob(
    fn: Callable[Concatenate[BlobStore, Cid, P], Awaitable[T]],
) -> Callable[Concatenate[BlobStore, Cid, P], Awaitable[T]]:
    """Hold the blob ``fn(store, cid, ...)`` works on against GC while it runs (a fetch)."""

    @functools.wraps(fn)
    async def held(store: BlobStore, cid: Cid, /, *args: P.args, **kwargs: P.kwargs) -> T:
        with store.using(cid):
            return await fn(store, cid, *args, **kwargs)

    return held


class AsyncStore:
    """Awaitable store calls, each in a worker thread, raising ``ServiceError``."""

    def __init__(self, store: BlobStore) -> None:
        #: The blocking store, for work composed inside one ``run`` call.
        self.sync = store

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` in a worker thread; store errors mapped to wire errors."""
        try:
            return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs))
        except (BlobError, PinnedError) as exc:
            raise service_error(exc) from None

    # -- queries ---------------------------------------------------------------

    async def has(self, cid: Cid) -> bool:
        return await self.run(self.sync.has, cid)

    async def has_blob(self, cid: Cid) -> bool:
        return await self.run(self.sync.has_blob, cid)

    async def present_chunks(self, cids: Iterable[Cid]) -> set[Cid]:
        return await self.run(self.sync.present_chunks, list(cids))

    async def stat(self, cid: Cid) -> BlobInfo:
        return await self.run(self.sync.stat, cid)

    async def list_cids(
        self,
        prefix: str = "",
        *,
        after: str = "",
        limit: int | None = None,
        complete_only: bool = True,
    ) -> list[BlobInfo]:
        return await self.run(
            self.sync.list_cids, prefix, after=after, limit=limit, complete_only=complete_only
        )

    async def missing_chunks(self, cid: Cid) -> list[int]:
        return await self.run(self.sync.missing_chunks, cid)

    # -- reads -----------------------------------------------------------------

    async def read_manifest(self, cid: Cid) -> Manifest:
        return await self.run(self.sync.read_manifest, cid)

    async def read_chunk(self, cid: Cid) -> bytes:
        return await self.run(self.sync.read_chunk, cid)

    async def read_chunks(self, manifest: Manifest, indices: list[int]) -> list[bytes]:
        return await self.run(self.sync.read_chunks, manifest, indices)

    # -- writes and upkeep -----------------------------------------------------

    async def begin_blob(self, manifest: Manifest, *, origin: str = "fetched") -> None:
        await self.run(self.sync.begin_blob, manifest, origin=origin)

    async def complete_blob(self, cid: Cid, *, hashed: bytes | None = None) -> bool:
        return await self.run(self.sync.complete_blob, cid, hashed=hashed)

    async def pin(self, cid: Cid) -> None:
        await self.run(self.sync.pin, cid)

    async def unpin(self, cid: Cid) -> None:
        await self.run(self.sync.unpin, cid)

    async def remove(self, cid: Cid, *, force: bool = False) -> int:
        return await self.run(self.sync.remove, cid, force=force)

    async def gc(self, *, everything: bool = False) -> GcReport:
        return await self.run(self.sync.gc, everything=everything)

    async def verify(self) -> VerifyReport:
        return await self.run(self.sync.verify)


__all__ = ["WIRE_CODES", "AsyncStore", "holding_blob", "service_error"]
