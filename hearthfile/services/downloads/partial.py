"""The bytes of one download as they land in the store (blocking; worker threads).

A download's manifest is known only at its end, so its bytes cannot go into a
partial blob begun from a manifest. Instead every full 256 KiB chunk is hashed
and written to the store as it arrives (``add``), through one open write batch,
and each ``flush`` commits that batch together with a *prefix blob*: a pinned
blob of the chunks so far (a valid manifest, since all its chunks are full). The
record keeps the prefix blob's CID, so after ``kill -9`` the download resumes
from the prefix's end, and the store's GC, which drops chunks no manifest
names, never takes the chunks of a download under way. Each flush replaces the
previous prefix blob (the chunks are shared, so none is written twice).

``finish`` writes the whole file's manifest (pinned, named, proven: its
``content`` is the BLAKE3 this object computed over every byte in order); the
last prefix blob goes once the record says Completed; ``discard`` drops
everything a failed download wrote. Memory stays at the chunks of one group.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence

from hearthfile.blobs.chunker import BlobError, Manifest, ManifestBuilder
from hearthfile.blobs.store import BlobStore, PinnedError, WriteBatch
from hearthfile.cids import Cid


class ExpectMismatch(Exception):
    """The whole file's hash is not the one the caller expected."""


class PartialDownload:
    def __init__(self, store: BlobStore, name: str, expect: str | None) -> None:
        self._store = store
        self._name = name
        self._expect = expect
        self._batch: WriteBatch | None = None
        self.prefix_cid: Cid | None = None
        #: Prefix blobs this object made: a prefix that is byte for byte a blob the
        #: user already held is that blob, and is never dropped with ours.
        self._owned: set[Cid] = set()
        self._reset_hashes()

    def _reset_hashes(self) -> None:
        self._builder = ManifestBuilder()
        self._sha256 = hashlib.sha256() if (self._expect or "").startswith("sha256:") else None
        #: Bytes hashed and written (committed or in the open batch).
        self.size = 0

    # -- resuming -----------------------------------------------------------------------

    def reopen(self, prefix_cid: str | None) -> int:
        """Take up the prefix blob a previous run left; returns the bytes it holds
        (0 when there is none, or it is gone or damaged: then start over)."""
        if prefix_cid is None:
            return 0
        try:
            manifest = self._store.read_manifest(Cid(prefix_cid))
            for index in range(len(manifest.chunks)):
                self._hash(self._store.read_chunk(manifest.chunks[index]))
        except BlobError:
            self._reset_hashes()
            self._drop(Cid(prefix_cid))  # only ever a prefix blob of ours
            return 0
        self.prefix_cid = manifest.cid
        self._owned.add(manifest.cid)
        return self.size

    def _hash(self, chunk: bytes | memoryview) -> Cid:
        cid = self._builder.add(chunk)
        if self._sha256 is not None:
            self._sha256.update(chunk)
        self.size += len(chunk)
        return cid

    # -- writing ------------------------------------------------------------------------

    def add(self, chunks: Sequence[bytes]) -> None:
        """Hash and write full chunks, in order, into the open batch."""
        if self._batch is None:
            self._batch = self._store.batch()
        self._batch.write_verified_chunks([(self._hash(c), c) for c in chunks])

    def flush(self) -> Cid | None:
        """Make what was added durable: commit it with a new prefix blob."""
        if self._batch is None:
            return self.prefix_cid
        batch, self._batch = self._batch, None
        if self.size == 0:
            batch.abort()
            return self.prefix_cid
        prefix = self._builder.finish(f"{self._name}.part")
        if prefix.cid != self.prefix_cid and not self._store.has_blob(prefix.cid):
            self._owned.add(prefix.cid)
        batch.write_manifest(prefix, pin=True, proven=True)
        batch.commit()
        self._replace_prefix(prefix.cid)
        return self.prefix_cid

    def finish(self, tail: bytes, mime: str | None) -> Manifest:
        """Add the last (short or empty) piece, check ``expect``, store the whole blob."""
        batch = self._batch if self._batch is not None else self._store.batch()
        self._batch = None
        try:
            if tail:
                batch.write_verified_chunks([(self._hash(tail), tail)])
            manifest = self._builder.finish(self._name, mime)
            self._check_expect(manifest)
            batch.write_manifest(manifest, pin=True, proven=True)
        except BaseException:
            batch.abort()
            raise
        batch.commit()
        # The last prefix blob stays until the record says Completed (the owner
        # drops it then): a crash in between must not leave a record pointing
        # at nothing, which would fetch the whole file again.
        return manifest

    def _check_expect(self, manifest: Manifest) -> None:
        if self._expect is None:
            return
        kind, _, want = self._expect.partition(":")
        got = manifest.content.partition(":")[2] if kind == "blake3" else ""
        if self._sha256 is not None:
            got = self._sha256.hexdigest()
        if got != want:
            raise ExpectMismatch(f"expected {kind}:{want}, the file has {kind}:{got}")

    def _replace_prefix(self, new: Cid) -> None:
        old, self.prefix_cid = self.prefix_cid, new
        if old is not None and old != new and old in self._owned:
            self._drop(old)

    def discard(self) -> None:
        """Forget every byte of this download (a failure, a removal, a restart)."""
        if self._batch is not None:
            self._batch.abort()
            self._batch = None
        if self.prefix_cid is not None and self.prefix_cid in self._owned:
            self._drop(self.prefix_cid)
            self.prefix_cid = None
        self._reset_hashes()

    def _drop(self, cid: Cid) -> None:
        with contextlib.suppress(BlobError, PinnedError):  # already gone
            self._store.remove(cid, force=True)
