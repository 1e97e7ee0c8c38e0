"""Store operations behind the CLI commands, returning plain data (blocking).

The same functions serve both ways the CLI works: directly on the store when
no daemon runs, and inside the daemon behind the ``node.*`` capabilities. So a
command behaves the same either way, and its output is printed by one piece of
code. Results are the typed results of ``services.results``.
"""

from __future__ import annotations

import mimetypes
import os
import stat as stat_module
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Final, TypeVar

from hearthfile.blobs.chunker import BlobError, Manifest
from hearthfile.cids import Cid
from hearthfile.errors import HearthError
from hearthfile.services.results import (
    AddProgress,
    BlobEntry,
    GcResult,
    PinState,
    Removed,
    VerifyResult,
)

if TYPE_CHECKING:  # the caller opened the store: a command that uses none skips its import
    from hearthfile.blobs.store import BlobInfo, BlobStore, WriteBatch

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


def expand_inputs(paths: list[str]) -> tuple[list[str], list[str]]:
    """What ``add PATH...`` adds, in order: each path as given (``-`` included), or
    every regular file under a directory (by name, depth first); and what was left
    out under directories (symlinks are not followed, special files not read)."""
    files: list[str] = []
    skipped: list[str] = []
    for text in paths:
        if text != "-" and Path(text).is_dir():
            _walk(Path(text), files, skipped)
        else:
            files.append(text)
    return files, skipped


def _walk(top: Path, files: list[str], skipped: list[str]) -> None:
    """Depth first, each directory's entries by name (as ``find | sort`` lists them)."""
    stack = [iter(_entries(top))]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
        elif entry.is_symlink():
            skipped.append(f"{entry.path}: a symlink, not followed")
        elif entry.is_dir(follow_symlinks=False):
            stack.append(iter(_entries(Path(entry.path))))
        elif entry.is_file(follow_symlinks=False):
            files.append(entry.path)
        else:
            skipped.append(f"{entry.path}: not a regular file")


def _entries(directory: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as entries:
            return sorted(entries, key=lambda e: e.name)
    except OSError as exc:
        raise PathError(f"cannot read {directory}: {exc.strerror}") from None


def is_regular_file(text: str) -> bool:
    """A file the node can read by its path; anything else (``-``, a pipe such as
    ``/dev/stdin``, a device) must be read, and streamed, by the caller."""
    try:
        return text != "-" and stat_module.S_ISREG(os.stat(text).st_mode)
    except OSError:
        return text != "-"  # let the add say why it cannot read it


class AddCounter:
    """Bytes stored so far across the files of one add, reported at most every
    ``interval_s`` and once at the end (called from the adding thread)."""

    def __init__(
        self, files: list[Path], report: Callable[[AddProgress], None], interval_s: float = 0.1
    ) -> None:
        self.total = sum(_size(path) for path in files)
        self.done = 0
        self._report = report
        self._interval_s = interval_s
        self._last = -interval_s

    def around(
        self, progress_for: Callable[[Path, int], Callable[[int], None]]
    ) -> Callable[[Path, int], Callable[[int], None]]:
        """``progress_for`` with this counter advanced by every chunk as well."""

        def each(path: Path, size: int) -> Callable[[int], None]:
            inner = progress_for(path, size)

            def step(count: int) -> None:
                inner(count)
                self.advance(count)

            return step

        return each

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self._last >= self._interval_s or self.done >= self.total:
            self._last = now
            self._report(AddProgress(self.done, max(self.total, self.done)))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def add_stream(store: BlobStore, stream: BinaryIO, *, name: str | None, pin: bool) -> Cid:
    """Add what ``stream`` holds until its end, as one blob."""
    mime = mimetypes.guess_type(name)[0] if name else None
    return store.add_stream(stream, name=name, mime=mime, pin=pin).cid


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
    progress: Callable[[AddProgress], None] | None = None,
) -> list[Cid]:
    """Add files; ``on_durable`` gets each group of CIDs once they are durable.
    ``progress_for(path, size)`` gives each file's per-chunk callback; ``progress``
    hears the bytes of all the files together."""
    files = check_paths(paths)
    if progress is not None:
        progress_for = AddCounter(files, progress).around(progress_for)
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


def ls_pages(store: BlobStore, prefix: str, page: int) -> Iterator[list[BlobInfo]]:
    """What ``ls`` lists, ``page`` blobs at a time, so a large store is never held whole
    (as the store lists them: ``entry`` makes each a result, a cost ``ls`` skips in text)."""
    after = ""
    while infos := store.list_cids(prefix, after=after, limit=page):
        yield infos
        if len(infos) < page:
            return
        after = infos[-1].cid


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
