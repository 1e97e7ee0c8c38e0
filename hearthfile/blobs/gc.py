"""Eviction planning: how much the store must free, and which blobs go first.

Ring: blobs (layer 1, blocking). Owns the GC bounds and the least-recently-used
choice of victims; ``store.py`` runs GC (``BlobStore.gc``) and deletes what is
chosen here, under its index lock.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from hearthfile.cids import Cid

GC_THRESHOLD: Final = 0.8
#: GC for free space goes this fraction of ``min_free_bytes`` past it, so it does
#: not run again on every write once the disk sits at the bound.
FREE_SLACK: Final = 0.1
GC_TARGET: Final = 0.7
#: Blobs evicted per index transaction.
GC_GROUP: Final = 20000


@dataclass(frozen=True, slots=True)
class GcReport:
    blobs_removed: tuple[Cid, ...]
    bytes_freed: int


def bytes_to_free(
    *,
    used: Callable[[], int],
    max_store_bytes: int | None,
    gc_threshold: float,
    gc_target: float,
    min_free_bytes: int,
    data_dir: Path,
) -> float:
    """What GC must free now: the store (``used()`` bytes) past ``gc_threshold``
    of ``max_store_bytes`` goes down to ``gc_target`` of it; free disk under
    ``min_free_bytes`` comes back to that plus ``FREE_SLACK``. The store is
    never measured against the whole disk's usage (another program filling
    the disk is not a reason to evict, until free space itself runs low)."""
    need = 0.0
    if max_store_bytes is not None:
        size = used()
        if size > gc_threshold * max_store_bytes:
            need = size - gc_target * max_store_bytes
    if min_free_bytes:
        st = os.statvfs(data_dir)
        free = st.f_bavail * st.f_frsize
        if free < min_free_bytes:
            need = max(need, min_free_bytes * (1 + FREE_SLACK) - free)
    return need


def pick_victims(
    db: sqlite3.Connection, busy: list[Cid], to_free: float, everything: bool
) -> list[Cid]:
    """The next least-recently-used unpinned blobs not in ``busy``, enough to free
    ``to_free`` bytes (each blob is its own file: its size is what it frees).
    Deleting them as one group costs one transaction instead of one per blob.
    The caller holds the index lock."""
    rows = db.execute(
        "SELECT cid, size FROM blobs WHERE pinned = 0 AND cid NOT IN "
        f"({','.join('?' * len(busy))}) ORDER BY last_access, cid LIMIT ?",
        (*busy, GC_GROUP),
    ).fetchall()
    if everything:
        return [cid for cid, _ in rows]
    victims: list[Cid] = []
    freed = 0
    for cid, size in rows:
        victims.append(cid)
        freed += size
        if freed >= to_free:
            break
    return victims
