"""Storing the chunks of one blob as they arrive from a peer (trio shell).

Used by the callee of ``file.put`` (the file service) and, for its constants,
by the fetcher: both verify every chunk against its manifest before it is
written and commit in batches, so an interrupted transfer resumes where its
last commit left off.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import trio

from hearthfile.blobs.chunker import BlobError, Manifest, check_chunk
from hearthfile.blobs.facade import service_error
from hearthfile.blobs.store import BlobStore
from hearthfile.errors import ServiceError
from hearthfile.transfer.fileproto import bad, want_int, want_map

#: Chunks verified and written per worker-thread hop.
CHUNKS_PER_HOP: Final = 8
#: A transfer commits what it has verified every this many bytes (and a fetch also
#: every ``COMMIT_INTERVAL_S``): what a crash (kill -9) can cost the resume.
COMMIT_BYTES: Final = 64 * 1024 * 1024


class ChunkSink:
    """Verifies and stores the chunks of one blob as ``{i, data}`` items arrive.

    Chunks are verified, then written a group per worker-thread hop and
    committed every ``COMMIT_BYTES`` and when the block is left, so an
    interrupted transfer resumes from what it received and nothing unverified
    is ever stored. Only indices in ``wanted`` are accepted, each once. A chunk
    that does not match the manifest is ``bad_request`` and rolls back the
    uncommitted group it arrived in.
    """

    def __init__(
        self,
        store: BlobStore,
        manifest: Manifest,
        wanted: set[int],
        on_stored: Callable[[list[tuple[int, bytes]]], None] = lambda group: None,
    ) -> None:
        self.wanted = wanted
        self.stored = 0
        self._store = store
        self._manifest = manifest
        self._on_stored = on_stored
        self._group: list[tuple[int, bytes]] = []
        self._batch = store.batch()
        #: Set when a chunk proved the manifest false (right hash, wrong length).
        self.manifest_invalid = False

    async def __aenter__(self) -> ChunkSink:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        # Verified chunks are kept even when the transfer is interrupted (peer gone,
        # cancelled), so the next attempt sends only the rest; bad data rolls the
        # uncommitted group back.
        interrupted = exc_type is not None
        bad_data = interrupted and issubclass(exc_type, ServiceError)  # type: ignore[arg-type]
        with trio.CancelScope(shield=interrupted):
            try:
                if not bad_data:
                    await self._flush()
            except ServiceError:
                await trio.to_thread.run_sync(self._batch.abort)
                if not interrupted:
                    raise
                return
            finish = self._batch.abort if bad_data else self._batch.commit
            await trio.to_thread.run_sync(finish)

    async def accept(self, item: object) -> None:
        entry = want_map(item, "stream item")
        index = want_int(entry.get("i"), "i", 0, len(self._manifest.chunks) - 1)
        data = entry.get("data")
        if index not in self.wanted or not isinstance(data, bytes):
            raise bad(f"chunk {index} was not asked for, came twice, or has no data")
        self.wanted.discard(index)
        self._group.append((index, data))
        if len(self._group) >= CHUNKS_PER_HOP:
            await self._flush()
            if self._batch.bytes_written >= COMMIT_BYTES:
                await trio.to_thread.run_sync(self._batch.commit)
                self._batch = self._store.batch()

    async def _flush(self) -> None:
        group, self._group = self._group, []
        if group:
            await trio.to_thread.run_sync(self._write, group)
            self.stored += len(group)
            self._on_stored(group)

    def _write(self, group: list[tuple[int, bytes]]) -> None:
        for index, data in group:
            try:
                check_chunk(self._manifest, index, data)
            except BlobError as exc:
                self.manifest_invalid = exc.code == "manifest_invalid"
                raise ServiceError("bad_request", f"chunk {index}: {exc.detail}") from None
        try:
            self._batch.write_chunks(self._manifest, group)
        except BlobError as exc:
            raise service_error(exc) from None
