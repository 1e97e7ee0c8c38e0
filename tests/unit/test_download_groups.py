"""The body of a download as it is cut into groups of whole chunks (services/downloads/run.py)."""

from __future__ import annotations

import random

from hearthfile.blobs.chunker import CHUNK_SIZE
from hearthfile.blobs.files import is_aligned
from hearthfile.services.downloads.run import Groups
from tests.unit.test_chunker import payload


async def test_pieces_of_any_size_come_out_as_whole_chunks_in_order() -> None:
    body = payload(5 * CHUNK_SIZE * 4 + 12345, seed=7)
    rng = random.Random(7)
    groups = Groups(4 * CHUNK_SIZE, 3)
    out = bytearray()
    at = 0
    while at < len(body):
        n = rng.choice([1, 4095, 65536, CHUNK_SIZE + 3, 1 << 20])
        view = memoryview(body[at : at + n])
        at += view.nbytes
        while view:
            view = groups.fill(view)
            # A full group, or now and then an early cut (the flush interval).
            if groups.full or (groups.filled >= CHUNK_SIZE and rng.random() < 0.2):
                group = await groups.cut()
                assert group.view.nbytes % CHUNK_SIZE == 0 and groups.filled < CHUNK_SIZE
                assert is_aligned(group.view)
                out += group.view
                groups.give_back(group)  # the writer, then the hasher
                groups.give_back(group)
    assert groups.filled == len(body) - len(out) < CHUNK_SIZE * 4
    if groups.filled >= CHUNK_SIZE:
        group = await groups.cut()
        out += group.view
    out += groups.current[: groups.filled]
    assert bytes(out) == body


async def test_a_cleared_group_starts_again_from_nothing() -> None:
    groups = Groups(2 * CHUNK_SIZE, 3)
    groups.fill(memoryview(b"x" * 1000))
    groups.clear()
    assert groups.filled == 0
