"""Store operations behind the CLI commands, returning plain data (blocking).

The same functions serve both ways the CLI works: directly on the store when
no daemon runs, and inside the daemon behind the ``node.*`` capabilities. So a
command behaves the same either way, and its output is printed by one piece of
code. Results are the typed results of ``services.results``.
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Final, TypeVar

from hearthfile.blobs.chunker import BlobError, Manifest
from hearthfile.blobs.store import BlobInfo, BlobStore, WriteBatch
from hearthfile.cids import Cid
from hearthfile.errors import HearthError
from hearthfile.services.results import BlobEntry, GcResult, PinState, Removed, VerifyResult

#: Files added in one call share a flush; this bounds what a crash can lose.
ADD_BATCH_BYTES: Final = 256 * 1024 * 1024
ADD_BATCH_FILES: Final = 2000

T = TypeVar("T")


class PathError(HearthError):
    """A path given to add cannot be used; ``usage`` marks a usage error (exit 2)."""

    def __init__(self, message: str, *, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


def pages(values: Iterable[T], budget: int, size: Callable[[T], int]) -> Iterator[list[T]]:
    """``values`` in order, in runs whose ``size`` adds up to at most ``budget`` (a
    single larger value gets a run of its own): the pieces of a list too big for one
    bus frame."""
    page: list[T] = []
    used = 0
    for value in values:
        cost = size(value)
        if page and used + cost > budget:
            yield page
            page, used = [], 0
        page.append(value)
        used += cost
    if page:
        yield page


def entry(info: BlobInfo) -> BlobEntry:
    return BlobEntry(
        cid=info.cid,
        size=info.size,
        chunks=info.chunk_count,
        content=info.content,
        pinned=info.pinned,
        complete=info.complete,
        name=info.name,
        mime=info.mime,
        added_at=info.added_at,
        last_access=info.last_access,
    )


def check_paths(paths: list[str]) -> list[Path]:
    out = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            raise PathError(f"{path} is a directory; add takes files", usage=True)
        out.append(path)
    return out


def add_paths(
    store: BlobStore,
    paths: list[str],
    *,
    pin: bool = False,
    on_durable: Callable[[list[Cid]], None] = lambda cids: None,
    progress_for: Callable[[Path, int], Callable[[int], None]] = lambda p, n: lambda k: None,
) -> list[Cid]:
    """Add files; ``on_durable`` gets each group of CIDs once they are durable."""
    files = check_paths(paths)
    added: list[Cid] = []
    pending: list[Cid] = []
    batch = store.batch()
    try:
        for path in files:
            pending.append(_add_file(store, batch, path, pin, progress_for).cid)
            if batch.bytes_written >= ADD_BATCH_BYTES or len(pending) >= ADD_BATCH_FILES:
                batch.commit()
                on_durable(pending)
                added += pending
                pending = []
                batch = store.batch()
    except BaseException:
        batch.abort()
        raise
    batch.commit()
    on_durable(pending)
    return added + pending


def _add_file(
    store: BlobStore,
    batch: WriteBatch,
    path: Path,
    pin: bool,
    progress_for: Callable[[Path, int], Callable[[int], None]],
) -> Manifest:
    try:
        stream: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise PathError(f"cannot read {path}: {exc.strerror}") from None
    with stream:
        size = os.fstat(stream.fileno()).st_size
        mime = mimetypes.guess_type(path.name)[0]
        try:
            return store.add_stream(
                stream,
                name=path.name,
                mime=mime,
                pin=pin,
                progress=progress_for(path, size),
                batch=batch,
            )
        except OSError as exc:
            raise PathError(f"cannot read {path}: {exc.strerror}") from None


def ls(store: BlobStore, prefix: str = "") -> list[BlobEntry]:
    return [entry(i) for i in store.list_cids(prefix)]


def stat(store: BlobStore, cid: Cid) -> BlobEntry:
    """A complete blob's metadata; a partial one (a fetch or put under way) is not shown."""
    info = store.stat(cid)
    if not info.complete:
        raise BlobError("not_found", cid)
    return entry(info)


def pin(store: BlobStore, cid: Cid) -> PinState:
    store.pin(cid)
    return PinState(cid, pinned=True)


def unpin(store: BlobStore, cid: Cid) -> PinState:
    store.unpin(cid)
    return PinState(cid, pinned=False)


def rm(store: BlobStore, cid: Cid) -> Removed:
    return Removed(cid, bytes_freed=store.remove(cid))


def gc(store: BlobStore, everything: bool = False) -> GcResult:
    report = store.gc(everything=everything)
    return GcResult(removed=list(report.blobs_removed), bytes_freed=report.bytes_freed)


def verify(store: BlobStore) -> VerifyResult:
    r = store.verify()
    return VerifyResult(
        chunks_checked=r.chunks_checked,
        manifests_checked=r.manifests_checked,
        corrupt=r.corrupt,
        missing=r.missing,
        manifests_restored=r.manifests_restored,
        untracked_removed=r.untracked_removed,
        adopted=r.adopted,
        affected=r.affected,
        clean=r.clean,
    )
