"""Which blobs ``verify --repair`` fetches again, and how each fetch's end is reported."""

from __future__ import annotations

from dataclasses import dataclass

import trio

from hearthfile.blobs.chunker import BlobError
from hearthfile.cids import Cid
from hearthfile.errors import ServiceError
from hearthfile.services.repair import repair, repair_targets
from hearthfile.services.results import VerifyResult


def cid(n: int) -> Cid:
    return Cid(f"blake3:{n:064x}")


@dataclass
class Listed:
    cid: Cid
    complete: bool
    pinned: bool = False


def test_targets_are_damaged_blobs_that_were_complete_or_are_pinned() -> None:
    before = [
        Listed(cid(1), True),  # corrupted by the verify: repaired
        Listed(cid(2), True),  # untouched
        Listed(cid(3), False),  # a cache blob partial already: left to a later get
        Listed(cid(4), False, pinned=True),  # partial but pinned: repaired
    ]
    after = [
        Listed(cid(1), False),
        Listed(cid(2), True),
        Listed(cid(3), False),
        Listed(cid(4), False, pinned=True),
    ]
    assert repair_targets(before, after, [cid(1)]) == [cid(1), cid(4)]
    assert repair_targets(before, after, [cid(9)]) == [cid(1), cid(4)], "unknown: not fetched"


def _verified() -> VerifyResult:
    return VerifyResult(0, 0, [], [], 0, 0, 0, [], clean=True)


async def test_each_target_is_repaired_sourceless_or_failed() -> None:
    async def fetch(target: Cid) -> object:
        outcomes: dict[Cid, Exception] = {
            cid(2): ServiceError("not_found", "no known source"),
            cid(3): ServiceError("unavailable", "every known holder is offline"),
            cid(4): ServiceError("partition", "chunks still missing"),
            cid(5): BlobError("disk_full", "no space"),
        }
        await trio.lowlevel.checkpoint()
        if target in outcomes:
            raise outcomes[target]
        return None

    result = await repair(_verified(), [cid(n) for n in range(1, 6)], fetch)
    assert result.repaired == [cid(1)]
    assert result.no_source == [cid(2), cid(3)]
    assert result.repair_failed == [
        f"{cid(4)}: partition: chunks still missing",
        f"{cid(5)}: disk_full: no space",
    ]
    assert result.unrepaired
    assert not (await repair(_verified(), [cid(1)], fetch)).unrepaired
