"""``verify --repair``: fetch again, from peers, the blobs a verify found damaged (trio shell).

A verify moves a corrupt or missing file aside and leaves the blobs it belonged to
partial; the chunks they lack are then fetched like any other (through the node's
``TransferManager``, as ``get`` does), which re-verifies every byte. Which blobs are
worth it: each that was complete before the verify, or that is pinned (the user
asked to keep it). A cache blob already partial before is left to a later ``get``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable
from typing import Final, Protocol

import trio

from hearthfile.blobs.chunker import BlobError
from hearthfile.blobs.store import BlobStore
from hearthfile.cids import Cid
from hearthfile.errors import ServiceError
from hearthfile.services import ops
from hearthfile.services.results import VerifyResult

#: Blobs repaired at once; each fetch fans out over its sources already.
REPAIR_CONCURRENCY: Final = 4
#: Fetch errors that mean no reachable peer holds the blob.
NO_SOURCE_CODES: Final = frozenset({"not_found", "unavailable"})

Fetch = Callable[[Cid], Awaitable[object]]


class BlobState(Protocol):
    """What ``repair_targets`` reads of a listed blob (``BlobStore.list_cids``)."""

    @property
    def cid(self) -> Cid: ...
    @property
    def complete(self) -> bool: ...
    @property
    def pinned(self) -> bool: ...


def repair_targets(
    before: Iterable[BlobState], after: Iterable[BlobState], affected: Iterable[Cid]
) -> list[Cid]:
    """The blobs to fetch again: affected or incomplete now, and complete before the
    verify or pinned. ``before``/``after``: every blob of the store, complete or not."""
    was_complete = {b.cid for b in before if b.complete}
    pinned = {b.cid for b in after if b.pinned}
    damaged = set(affected) | {b.cid for b in after if not b.complete}
    return sorted(c for c in damaged if c in was_complete or c in pinned)


def verify_for_repair(store: BlobStore) -> tuple[VerifyResult, list[Cid]]:
    """Verify the store (in a worker thread); also the blobs to fetch again."""
    before = store.list_cids(complete_only=False)
    result = ops.verify(store)
    after = store.list_cids(complete_only=False)
    return result, repair_targets(before, after, result.affected)


async def repair(result: VerifyResult, targets: list[Cid], fetch: Fetch) -> VerifyResult:
    """``result`` with what became of each target: repaired, no source, or failed."""
    repaired: list[Cid] = []
    no_source: list[Cid] = []
    failed: list[str] = []
    limiter = trio.CapacityLimiter(REPAIR_CONCURRENCY)

    async def one(cid: Cid) -> None:
        async with limiter:
            try:
                await fetch(cid)
            except ServiceError as exc:
                if exc.code in NO_SOURCE_CODES:
                    no_source.append(cid)
                else:
                    failed.append(f"{cid}: {exc.code}: {exc.detail}")
                return
            except BlobError as exc:
                failed.append(f"{cid}: {exc.code}: {exc.detail}")
                return
            repaired.append(cid)

    async with trio.open_nursery() as nursery:
        for cid in targets:
            nursery.start_soon(one, cid)
    return dataclasses.replace(
        result, repaired=sorted(repaired), no_source=sorted(no_source), repair_failed=sorted(failed)
    )
