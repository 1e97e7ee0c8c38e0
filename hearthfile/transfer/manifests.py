"""Reading a blob's manifest from its sources (trio shell).

A fetch cannot start before it has the manifest, so this is where one silent or
slow source could hold it up, and where a hostile one could make us buffer a
huge claimed manifest. Two rules close both:

- Several sources are asked, staggered: the first source at once, the next after
  ``HEDGE_S`` or as soon as the previous one failed, and so on. The first manifest
  that verifies against the CID wins and the other reads are cancelled; a silent
  source costs an honest one ``HEDGE_S`` at most.
- Every read has a deadline: ``BASE_TIMEOUT_S`` plus the time the announced
  ``manifest_size`` takes at ``MIN_RATE_BYTES_S``; a read past it fails as
  ``timeout``. The announced size itself is bounded by the manifest format
  (``fileproto.MAX_MANIFEST_BYTES``) and every piece must fit within it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import trio

from hearthfile.blobs.chunker import Manifest
from hearthfile.cids import Cid
from hearthfile.errors import PeerUnavailable, ServiceError
from hearthfile.transfer.fileproto import ManifestReceiver, bad, want_map
from hearthfile.transfer.peer import Peer

#: How long a source may take to answer before the next one is asked as well.
HEDGE_S: Final = 1.0
#: Deadline of a manifest read before its size is known, and its fixed part after.
BASE_TIMEOUT_S: Final = 10.0
#: Slowest delivery accepted for the rest of a manifest (a 10 GiB blob's 3 MB
#: manifest may take 13 s in all; the largest allowed one about five minutes).
MIN_RATE_BYTES_S: Final = 1024 * 1024
MAX_NAME_CHARS: Final = 1024


async def manifest_from_any(cid: Cid, sources: Sequence[Peer]) -> Manifest:
    """The verified manifest of ``cid`` from the first of ``sources`` to give one."""
    failures: list[str] = []
    found: list[Manifest] = []

    async def attempt(source: Peer, done: trio.Event, nursery: trio.Nursery) -> None:
        try:
            found.append(await read_manifest(cid, source))
            nursery.cancel_scope.cancel()
        except (ServiceError, PeerUnavailable) as exc:
            failures.append(f"{source.peer.short()}: {exc}")
        finally:
            done.set()

    async with trio.open_nursery() as nursery:
        for source in sources:
            done = trio.Event()
            nursery.start_soon(attempt, source, done, nursery)
            with trio.move_on_after(HEDGE_S):
                await done.wait()
    if found:
        return found[0]
    if failures and all(": not_found" in f for f in failures):
        raise ServiceError("not_found", f"{cid}: no source holds it")
    raise ServiceError("unavailable", f"{cid}: no source gave its manifest ({'; '.join(failures)})")


async def read_manifest(cid: Cid, source: Peer) -> Manifest:
    """Ask ``source`` for the manifest alone (an empty chunk list), within the
    deadline, and verify it against ``cid``."""
    manifest: Manifest | None = None
    with trio.move_on_after(BASE_TIMEOUT_S) as deadline:
        manifest = await _read(cid, source, deadline)
    if deadline.cancelled_caught or manifest is None:
        raise ServiceError("timeout", f"no manifest from {source.peer.short()} in time")
    return manifest


async def _read(cid: Cid, source: Peer, deadline: trio.CancelScope) -> Manifest | None:
    async with source.open_call("file.read", {"cid": cid, "chunks": []}) as call:
        receiver: ManifestReceiver | None = None
        manifest: Manifest | None = None
        async for item in call:
            entry = want_map(item, "stream item")
            if receiver is None:
                receiver = ManifestReceiver(cid, entry.get("manifest_size"))  # type: ignore[arg-type]
                deadline.deadline += receiver.size / MIN_RATE_BYTES_S
            got = receiver.feed(entry)
            if got is not None:
                name, mime = _text(entry.get("name")), _text(entry.get("mime"))
                manifest = Manifest(got.size, got.chunk_size, got.chunks, got.content, name, mime)
        await call.result()
    if manifest is None:
        raise bad(f"{source.peer.short()} sent no manifest for {cid}")
    return manifest


def _text(value: object) -> str | None:
    return value[:MAX_NAME_CHARS] if isinstance(value, str) else None
