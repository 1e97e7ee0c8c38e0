"""AsyncStore: store calls in worker threads, store errors as wire errors (one table)."""

from __future__ import annotations

import pytest
import trio

from hearthfile.blobs.chunker import BLOB_ERROR_CODES, BlobError, chunk_blob
from hearthfile.blobs.facade import WIRE_CODES, AsyncStore, service_error
from hearthfile.blobs.store import BlobStore, PinnedError
from hearthfile.cids import cid_of
from hearthfile.errors import WIRE_ERROR_CODES, ServiceError
from tests.unit.test_chunker import payload


def test_every_store_error_has_one_wire_code() -> None:
    assert set(WIRE_CODES) == BLOB_ERROR_CODES
    assert set(WIRE_CODES.values()) <= WIRE_ERROR_CODES
    assert service_error(BlobError("disk_full", "x")).code == "capacity_exceeded"
    assert service_error(BlobError("manifest_invalid", "bad size")).code == "bad_request"
    assert service_error(BlobError("hash_mismatch", "corrupt")).code == "not_found"
    assert service_error(PinnedError("pinned")).code == "bad_request"


def test_io_errors_keep_their_text_local() -> None:
    err = service_error(BlobError("io_error", "/secret/path: Input/output error"))
    assert err.code == "internal" and "secret" not in str(err)


async def test_async_store_reads_and_maps_errors(store: BlobStore) -> None:
    facade = AsyncStore(store)
    manifest, chunks = chunk_blob(payload(1000), name="a")
    cid = store.write_blob(manifest, chunks, pin=True)
    assert await facade.has_blob(cid)
    assert (await facade.read_manifest(cid)).chunks == manifest.chunks
    assert await facade.read_chunks(manifest, [0]) == chunks
    with pytest.raises(ServiceError) as err:
        await facade.stat(cid_of(b"absent"))
    assert err.value.code == "not_found"
    with pytest.raises(ServiceError) as err:
        await facade.remove(cid)
    assert err.value.code == "bad_request"
    assert await facade.has_blob(cid)


async def test_run_leaves_the_event_loop_free(store: BlobStore) -> None:
    facade = AsyncStore(store)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.sleep(0)

    started = trio.Event()

    def blocking() -> int:
        trio.from_thread.run_sync(started.set)
        # Wait (in the thread) until the loop has shown it keeps running.
        while trio.from_thread.run_sync(lambda: ticks) < 5:
            pass
        return 7

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        assert await facade.run(blocking) == 7
        nursery.cancel_scope.cancel()
    assert started.is_set()
