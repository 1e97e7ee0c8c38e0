"""The bytes of one download as they land in the store (blocking; worker threads).

A download's manifest is known only at its end, so its bytes go into an
*incoming* file of the store (``<data>/partial/incoming-<key>``), appended in
order: every full 256 KiB chunk is hashed (its CID, the whole file's BLAKE3 and,
when asked, SHA-256) and written as it arrives. ``flush`` makes what was written
durable and returns a token naming the file and its durable length; the record
keeps the token, so after ``kill -9`` the download resumes from that length
(the file is cut back to it and its bytes hashed again: a hasher's state cannot
be saved). ``finish`` adds the last piece, checks ``expect`` and makes the file
the blob (renamed into place, pinned, named; no copy); ``discard`` drops it.
Memory stays at the chunks of one group.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterable

from hearthfile.blobs.batch import io_error
from hearthfile.blobs.chunker import CHUNK_SIZE, BlobError, Manifest, ManifestBuilder
from hearthfile.blobs.files import Buffer, SequentialWriter
from hearthfile.blobs.pack import INLINE_MAX
from hearthfile.blobs.store import BlobStore, PinnedError
from hearthfile.cids import Cid, is_cid

#: Tokens name the incoming file and the bytes of it known durable.
TOKEN_PREFIX = "incoming:"


class ExpectMismatch(Exception):
    """The whole file's hash is not the one the caller expected."""


class PartialDownload:
    def __init__(self, store: BlobStore, name: str, expect: str | None) -> None:
        self._store = store
        self._name = name
        self._expect = expect
        self._key: str | None = None
        self._fd: int | None = None
        #: The token of the last flush (None before the first, and once finished).
        self.prefix_cid: str | None = None
        self._reset_hashes()

    def _reset_hashes(self) -> None:
        self._builder = ManifestBuilder()
        self._sha256 = hashlib.sha256() if (self._expect or "").startswith("sha256:") else None
        #: Bytes hashed, bytes written, and bytes written before the last sync.
        self.size = self._written = self.durable = 0

    def _path(self) -> str:
        if self._key is None:
            self._key = secrets.token_hex(8)
        return self._store.layout.incoming(self._key)

    # -- resuming -----------------------------------------------------------------------

    def reopen(self, token: str | None) -> int:
        """Take up the file a previous run left; returns the bytes it holds (0 when
        there is none, or it is shorter than the token says: then start over)."""
        parsed = parse_token(token)
        if parsed is None:
            if token is not None:
                drop_partial(self._store, token)
            return 0
        self._key, length = parsed
        path = self._path()
        try:
            with open(path, "rb", buffering=0) as f:
                for _ in range(length // CHUNK_SIZE):
                    chunk = f.read(CHUNK_SIZE)
                    if len(chunk) != CHUNK_SIZE:
                        raise EOFError
                    self._hash(chunk)
            os.truncate(path, length)
            self._written = self.durable = length
        except (OSError, EOFError):
            self.discard()
            return 0
        self.prefix_cid = token
        return self.size

    def _hash(self, chunk: Buffer) -> None:
        self._builder.add(chunk)
        if self._sha256 is not None:
            self._sha256.update(chunk)
        self.size += len(chunk)

    # -- writing ------------------------------------------------------------------------

    def add(self, data: Buffer) -> None:
        """Hash and append whole chunks (the last piece alone may be short), in order."""
        self.hash(data)
        self.write(data)

    def hash(self, data: Buffer) -> None:
        """Hash whole chunks (the last piece alone may be short), in order."""
        view = memoryview(data).cast("B")
        for start in range(0, view.nbytes, CHUNK_SIZE):
            self._hash(view[start : start + CHUNK_SIZE])

    def write(self, data: Buffer) -> None:
        """Append ``data`` with one write; may run in a thread beside ``hash`` (of the
        same bytes or others: both let go of the GIL), but not beside another
        ``write`` or ``flush``."""
        if self._fd is None:
            self._fd = os.open(self._path(), os.O_WRONLY | os.O_CREAT, 0o644)
            os.lseek(self._fd, self._written, os.SEEK_SET)
        try:
            SequentialWriter(self._fd, direct=self._store.direct_io).write(data)
        except OSError as exc:
            raise io_error(f"writing {self._name}", exc) from None
        self._written += len(memoryview(data).cast("B"))

    def flush(self) -> str | None:
        """Make what was written durable; returns the token to keep in the record. It
        names the bytes written, whatever is being hashed meanwhile: a resume
        hashes them again from the file."""
        written = self._written
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                raise io_error(f"writing {self._name}", exc) from None
        if written:
            self.durable = written
            self.prefix_cid = f"{TOKEN_PREFIX}{self._key}:{written}"
        return self.prefix_cid

    def finish(self, tail: bytes, mime: str | None) -> Manifest:
        """Add the last (short or empty) piece, check ``expect``, store the whole blob."""
        if tail:
            self.add(tail)
        self._close()
        manifest = self._builder.finish(self._name, mime)
        self._check_expect(manifest)
        path = self._path()
        if not os.path.exists(path):
            open(path, "wb").close()  # an empty download
        with self._store.batch() as batch:
            if manifest.size <= INLINE_MAX:
                with open(path, "rb") as f:
                    batch.add_small(manifest, f.read(), pin=True, origin="downloaded")
                os.unlink(path)
            else:
                batch.place(path, manifest, pin=True, origin="downloaded")
        self.prefix_cid = None
        return manifest

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _check_expect(self, manifest: Manifest) -> None:
        if self._expect is None:
            return
        kind, _, want = self._expect.partition(":")
        got = manifest.content.partition(":")[2] if kind == "blake3" else ""
        if self._sha256 is not None:
            got = self._sha256.hexdigest()
        if got != want:
            self.discard()
            raise ExpectMismatch(f"expected {kind}:{want}, the file has {kind}:{got}")

    def discard(self) -> None:
        """Forget every byte of this download (a failure, a removal, a restart)."""
        self._close()
        if self._key is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._store.layout.incoming(self._key))
        self._key = None
        self.prefix_cid = None
        self._reset_hashes()


def parse_token(token: str | None) -> tuple[str, int] | None:
    """(key, durable length) of a token ``flush`` made, else None."""
    if token is None or not token.startswith(TOKEN_PREFIX):
        return None
    key, _, length = token[len(TOKEN_PREFIX) :].partition(":")
    if not (key.isalnum() and length.isdigit()):
        return None
    return key, int(length)


def drop_partial(store: BlobStore, token: str) -> None:
    """Remove what a download left: its incoming file (or, from a store written
    before incoming files, a prefix blob)."""
    parsed = parse_token(token)
    if parsed is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(store.layout.incoming(parsed[0]))
    elif is_cid(token):
        with contextlib.suppress(BlobError, PinnedError):
            store.remove(Cid(token), force=True)


def drop_strays(store: BlobStore, tokens: Iterable[str | None]) -> int:
    """Remove the incoming files no download's record names (a record removed, or a
    download that never flushed, before a crash); returns how many. For a node
    starting, before any download runs."""
    kept = {parsed[0] for token in tokens if (parsed := parse_token(token)) is not None}
    removed = 0
    for path in store.layout.partials.glob("incoming-*"):
        if path.name.removeprefix("incoming-") not in kept:
            path.unlink(missing_ok=True)
            removed += 1
    return removed
