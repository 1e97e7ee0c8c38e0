"""The download service against a real origin on loopback and a real store.

DESIGN.md section 12. The service runs in the test's trio loop (httpx over real
sockets, the real BlobStore); the origin (tests/origin.py) runs in a thread and
logs every request, so each test shows what the node asked for and what it
cost the origin. The daemon-level tests (CLI, kill -9, peers) are in
test_downloads.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import blake3
import pytest
import trio

from hearthfile.blobs.facade import AsyncStore
from hearthfile.blobs.store import BlobStore
from hearthfile.config import DownloadsConfig
from hearthfile.errors import ServiceError
from hearthfile.services.downloads.records import RecordBook
from hearthfile.services.downloads.service import MAX_WAIT_S, Downloads
from tests.integration import test_crash
from tests.origin import Origin, Served
from tests.unit.test_chunker import payload

MiB = 1024 * 1024
#: A 24 MiB tmpfs (root only, else skipped), shared with the store's full-disk tests.
small_disk = test_crash.small_disk
#: Small flushes so that a few MiB are enough to see resumes.
CONFIG = DownloadsConfig(flush_bytes=256 * 1024, flush_interval_s=0.05, idle_timeout_s=10)


@pytest.fixture
def origin() -> Iterator[Origin]:
    o = Origin().start()
    yield o
    o.stop()


@asynccontextmanager
async def service(
    data: Path, config: DownloadsConfig = CONFIG
) -> AsyncIterator[tuple[Downloads, BlobStore]]:
    store = BlobStore(data)
    book = RecordBook(data)
    downloads = Downloads(AsyncStore(store), book, config)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(downloads.serve)
            yield downloads, store
            nursery.cancel_scope.cancel()
    finally:
        book.close()
        store.close()


async def until(check: Callable[[], Any], what: str = "condition") -> Any:
    """Poll ``check`` until it is truthy (the caller's fail_after bounds it)."""
    while not (value := check()):
        await trio.sleep(0.01)  # polling a condition, not standing in for one
    return value


async def finished(d: Downloads, id_: str) -> dict[str, Any]:
    """The record once it ended and its last prefix blob is gone."""

    def ended() -> dict[str, Any] | None:
        r = d.show(id_)
        done = r["status"] in ("Completed", "Failed") and d.record(id_).partial_cid is None
        return r if done else None

    return await until(ended, "the end")


def blob_bytes(store: BlobStore, cid: str) -> bytes:
    return b"".join(bytes(v) for v in store.read_blob_stream(cid, 0, None))  # type: ignore[arg-type]


async def test_download_completes_verified_pinned_and_named(tmp_path: Path, origin: Origin) -> None:
    data = payload(3 * MiB + 12345, seed=1)
    origin.files["/a/report.pdf"] = Served(data, content_type="application/pdf")
    expect = "blake3:" + blake3.blake3(data).hexdigest()
    with trio.fail_after(60):
        async with service(tmp_path / "data") as (d, store):
            rec, new = await d.add(origin.url("/a/report.pdf"), expect=expect)
            assert new and rec["name"] == "report.pdf"
            done = await finished(d, rec["id"])
            assert done["status"] == "Completed", done
            assert blob_bytes(store, done["cid"]) == data
            info = store.stat(done["cid"])
            assert (info.pinned, info.name, info.mime) == (True, "report.pdf", "application/pdf")
            # Only the finished blob is left: the prefix blobs of the flushes are gone.
            assert [i.cid for i in store.list_cids()] == [done["cid"]]
    assert [h.range for h in origin.hits("/a/report.pdf")] == [None]


async def test_wait_answers_when_the_download_ends_not_when_its_time_is_up(
    tmp_path: Path, origin: Origin
) -> None:
    data = payload(3 * MiB, seed=12)
    served = origin.files["/w"] = Served(data, hold_after=MiB)
    with trio.fail_after(60):
        async with service(tmp_path / "data") as (d, store):
            rec, _ = await d.add(origin.url("/w"))
            await until(lambda: d.record(rec["id"]).downloaded_bytes >= MiB)
            held = await d.wait(rec["id"], 0.05)  # the body is held: the time runs out
            assert held["status"] == "InProgress"
            served.release.set()
            # Well before the wait's 30 s run out, the end of the download answers it.
            with trio.fail_after(MAX_WAIT_S - 10):
                done = await d.wait(rec["id"], MAX_WAIT_S)
            assert done["status"] == "Completed"
            assert done["cid"] is not None and blob_bytes(store, done["cid"]) == data
            # The record as answered is the one written: a restart would find it so.
            assert d.record(rec["id"]).status.value == "Completed"


async def test_a_removed_download_ends_its_waits(tmp_path: Path, origin: Origin) -> None:
    served = origin.files["/r"] = Served(payload(2 * MiB, seed=13), hold_after=MiB)
    with trio.fail_after(60):
        async with service(tmp_path / "data") as (d, _):
            rec, _ = await d.add(origin.url("/r"))
            outcome: list[str] = []

            async def waiter() -> None:
                try:
                    await d.wait(rec["id"], MAX_WAIT_S)
                except ServiceError as exc:
                    outcome.append(exc.code)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter)
                await until(lambda: d.record(rec["id"]).downloaded_bytes >= MiB)
                with trio.fail_after(MAX_WAIT_S - 10):
                    await d.remove(rec["id"])
                    await until(lambda: outcome)
            served.release.set()
            assert outcome == ["not_found"]


async def test_same_url_twice_is_one_download(tmp_path: Path, origin: Origin) -> None:
    origin.files["/f"] = Served(payload(2 * MiB, seed=2), rate=4 * MiB)
    with trio.fail_after(60):
        async with service(tmp_path / "data") as (d, _):
            first, new1 = await d.add(origin.url("/f"))
            second, new2 = await d.add(origin.url("/f"), name="other")
            assert (new1, new2, first["id"]) == (True, False, second["id"])
            await finished(d, first["id"])
            assert len(d.find()) == 1
    assert len(origin.hits("/f")) == 1


async def test_pause_then_resume_continues_where_it_stopped(tmp_path: Path, origin: Origin) -> None:
    data = payload(6 * MiB, seed=3)
    served = origin.files["/p"] = Served(data, hold_after=2 * MiB)
    with trio.fail_after(90):
        async with service(tmp_path / "data") as (d, store):
            rec, _ = await d.add(origin.url("/p"))
            await until(lambda: d.record(rec["id"]).downloaded_bytes >= 2 * MiB)
            paused = await d.pause(rec["id"])
            assert paused["status"] == "Paused"
            kept = d.record(rec["id"]).downloaded_bytes
            assert kept == 2 * MiB and d.record(rec["id"]).partial_cid is not None
            served.release.set()
            await d.resume(rec["id"])
            done = await finished(d, rec["id"])
            assert blob_bytes(store, done["cid"]) == data
    hits = origin.hits("/p")
    assert [h.status for h in hits] == [200, 206]
    assert hits[1].range == f"bytes={kept}-" and hits[1].if_range == '"v1"'
    assert hits[1].sent == len(data) - kept  # nothing we held was sent again
    assert hits[0].sent < len(data)  # the pause came mid-body


async def test_origin_drops_mid_body_and_the_rest_is_asked_for(
    tmp_path: Path, origin: Origin
) -> None:
    data = payload(3 * MiB, seed=4)
    origin.files["/d"] = Served(data, drop_after=MiB + 777, drops_left=1)
    with trio.fail_after(60):
        async with service(tmp_path / "data") as (d, store):
            rec, _ = await d.add(origin.url("/d"))
            done = await finished(d, rec["id"])
            assert blob_bytes(store, done["cid"]) == data
    hits = origin.hits("/d")
    assert [h.range for h in hits] == [None, f"bytes={MiB + 777}-"]
    assert origin.body_bytes("/d") == len(data)


async def test_a_drop_mid_group_keeps_the_chunks_not_yet_written(
    tmp_path: Path, origin: Origin
) -> None:
    """With the default grouping (8 MiB per hop, no flush due), a break leaves whole
    chunks received but not handed to the writer: they are kept, and the range asked
    for starts after them."""
    data = payload(12 * MiB, seed=5)
    origin.files["/g"] = Served(data, drop_after=5 * MiB + 777, drops_left=1)
    config = replace(CONFIG, flush_bytes=64 * MiB, flush_interval_s=60)
    with trio.fail_after(60):
        async with service(tmp_path / "data", config) as (d, store):
            rec, _ = await d.add(origin.url("/g"))
            done = await finished(d, rec["id"])
            assert done["status"] == "Completed", done
            assert blob_bytes(store, done["cid"]) == data
    assert [h.range for h in origin.hits("/g")] == [None, f"bytes={5 * MiB + 777}-"]
    assert origin.body_bytes("/g") == len(data)


async def test_a_file_of_exactly_max_bytes_completes(tmp_path: Path, origin: Origin) -> None:
    """The limit counts each byte once, also while a group is being hashed and written
    (with 8 MiB groups the bytes in the writer's hands were counted twice)."""
    data = payload(24 * MiB, seed=6)
    origin.files["/m"] = Served(data)
    config = replace(CONFIG, flush_bytes=64 * MiB, flush_interval_s=60, max_bytes=len(data))
    with trio.fail_after(60):
        async with service(tmp_path / "data", config) as (d, store):
            rec, _ = await d.add(origin.url("/m"))
            done = await finished(d, rec["id"])
            assert done["status"] == "Completed", done
            assert blob_bytes(store, done["cid"]) == data


async def test_origin_that_ignores_ranges_restarts_cleanly(tmp_path: Path, origin: Origin) -> None:
    data = payload(3 * MiB, seed=5)
    origin.files["/i"] = Served(data, ignore_ranges=True, drop_after=2 * MiB, drops_left=1)
    with trio.fail_after(60):
        async with service(tmp_path / "data") as (d, store):
            rec, _ = await d.add(origin.url("/i"))
            done = await finished(d, rec["id"])
            assert done["status"] == "Completed", done
            assert blob_bytes(store, done["cid"]) == data
            assert [i.cid for i in store.list_cids()] == [done["cid"]]
    hits = origin.hits("/i")
    assert [(h.range is not None, h.status) for h in hits] == [(False, 200), (True, 200)]


async def test_changed_etag_restarts_from_zero(tmp_path: Path, origin: Origin) -> None:
    old, new = payload(3 * MiB, seed=6), payload(3 * MiB - 5, seed=7)

    def change(served: Served) -> None:
        served.data, served.etag = new, '"v2"'

    origin.files["/e"] = Served(old, drop_after=2 * MiB, drops_left=1, on_drop=change)
    with trio.fail_after(60):
        async with service(tmp_path / "data") as (d, store):
            rec, _ = await d.add(origin.url("/e"))
            done = await finished(d, rec["id"])
            assert blob_bytes(store, done["cid"]) == new
            assert [i.cid for i in store.list_cids()] == [done["cid"]]
    hits = origin.hits("/e")
    assert hits[1].if_range == '"v1"' and hits[1].status == 200  # If-Range failed: whole file


@pytest.mark.parametrize("status", [404, 500])
async def test_http_error_fails_with_the_code(tmp_path: Path, origin: Origin, status: int) -> None:
    origin.files["/x"] = Served(b"", status=status)
    with trio.fail_after(30):
        async with service(tmp_path / "data") as (d, store):
            rec, _ = await d.add(origin.url("/x"))
            done = await finished(d, rec["id"])
            assert done["status"] == "Failed" and f"HTTP {status}" in done["error"]
            assert store.count() == 0


async def test_unreachable_origin_fails_readably(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with service(tmp_path / "data") as (d, _):
            rec, _ = await d.add("http://127.0.0.1:9/nothing")
            done = await finished(d, rec["id"])
            assert done["status"] == "Failed" and "cannot connect" in done["error"]
            rec, _ = await d.add("http://no-such-host.invalid/file")  # a DNS failure
            done = await finished(d, rec["id"])
            assert done["status"] == "Failed" and "cannot connect" in done["error"], done


@pytest.mark.parametrize("kind", ["blake3", "sha256"])
async def test_expect_mismatch_fails_and_keeps_nothing(
    tmp_path: Path, origin: Origin, kind: str
) -> None:
    data = payload(2 * MiB + 3, seed=8)
    origin.files["/m"] = Served(data)
    wrong = f"{kind}:" + hashlib.sha256(b"something else").hexdigest()
    with trio.fail_after(60):
        async with service(tmp_path / "data") as (d, store):
            rec, _ = await d.add(origin.url("/m"), expect=wrong)
            done = await finished(d, rec["id"])
            assert done["status"] == "Failed" and "expected" in done["error"], done
            assert store.count() == 0 and store.total_bytes() == 0
            # A Failed download can be retried; with the right hash it completes.
            right = "sha256:" + hashlib.sha256(data).hexdigest()
            await d.remove(rec["id"])
            rec, _ = await d.add(origin.url("/m"), expect=right)
            assert (await finished(d, rec["id"]))["status"] == "Completed"


async def test_over_max_bytes_fails_before_the_body(tmp_path: Path, origin: Origin) -> None:
    origin.files["/big"] = Served(payload(2 * MiB, seed=9))
    with trio.fail_after(30):
        async with service(tmp_path / "data", replace(CONFIG, max_bytes=MiB)) as (d, store):
            rec, _ = await d.add(origin.url("/big"))
            done = await finished(d, rec["id"])
            assert done["status"] == "Failed" and "max_bytes" in done["error"]
            assert store.count() == 0


async def test_redirects_are_followed_and_bounded(tmp_path: Path, origin: Origin) -> None:
    data = payload(300_000, seed=10)
    origin.files["/real"] = Served(data)
    origin.files["/old"] = Served(redirect=origin.url("/real"))
    origin.files["/loop"] = Served(redirect=origin.url("/loop"))
    with trio.fail_after(30):
        async with service(tmp_path / "data") as (d, store):
            rec, _ = await d.add(origin.url("/old"))
            done = await finished(d, rec["id"])
            assert blob_bytes(store, done["cid"]) == data
            rec, _ = await d.add(origin.url("/loop"))
            done = await finished(d, rec["id"])
            assert done["status"] == "Failed" and "redirects" in done["error"]


async def test_max_active_queues_the_fourth(tmp_path: Path, origin: Origin) -> None:
    for i in range(4):
        origin.files[f"/q{i}"] = Served(payload(MiB, seed=20 + i), rate=256 * 1024)
    with trio.fail_after(90):
        async with service(tmp_path / "data") as (d, _):
            ids = [(await d.add(origin.url(f"/q{i}")))[0]["id"] for i in range(4)]
            states = [d.show(i)["status"] for i in ids]
            assert states == ["InProgress", "InProgress", "InProgress", "Pending"]
            await d.pause(ids[0])  # a slot frees: the fourth starts
            assert d.show(ids[3])["status"] == "InProgress"
            for id_ in ids[1:]:
                assert (await finished(d, id_))["status"] == "Completed"


async def test_records_survive_a_restart_and_resume_with_a_range(
    tmp_path: Path, origin: Origin
) -> None:
    """A service stopped mid-download (as a daemon stopping) takes the download up
    again from its last flush, with a range request."""
    data = payload(4 * MiB, seed=11)
    served = origin.files["/r"] = Served(data, hold_after=MiB)
    origin.files["/r?held"] = Served(data, hold_after=0, release=served.release)
    with trio.fail_after(90):
        async with service(tmp_path / "data") as (d, _):
            rec, _ = await d.add(origin.url("/r"))
            held, _ = await d.add(origin.url("/r?held"))
            await d.pause(held["id"])
            await until(lambda: d.record(rec["id"]).downloaded_bytes >= MiB)
        served.release.set()
        async with service(tmp_path / "data") as (d, store):
            assert d.show(held["id"])["status"] == "Paused"  # Paused stays paused
            kept = d.record(rec["id"]).downloaded_bytes
            assert kept == MiB
            done = await finished(d, rec["id"])
            assert blob_bytes(store, done["cid"]) == data
    assert origin.hits("/r")[-1].range == f"bytes={kept}-"


async def test_empty_file_and_a_pause_while_pending(tmp_path: Path, origin: Origin) -> None:
    origin.files["/empty"] = Served(b"")
    origin.files["/slow"] = Served(payload(MiB, seed=12), rate=256 * 1024)
    one = replace(CONFIG, max_active=1)
    with trio.fail_after(60):
        async with service(tmp_path / "data", one) as (d, store):
            slow, _ = await d.add(origin.url("/slow"))
            empty, _ = await d.add(origin.url("/empty"))
            assert d.show(empty["id"])["status"] == "Pending"
            assert (await d.pause(empty["id"]))["status"] == "Paused"
            await d.remove(slow["id"])  # the slot frees; a paused download stays paused
            assert d.show(empty["id"])["status"] == "Paused"
            await d.resume(empty["id"])
            done = await finished(d, empty["id"])
            assert done["status"] == "Completed" and done["size"] == 0
            assert blob_bytes(store, done["cid"]) == b""
            assert [i.cid for i in store.list_cids()] == [done["cid"]]  # nothing of /slow


class _Ctx:
    """What ``node.downloads`` sees of a call: its args, and the pages it streams."""

    def __init__(self, args: dict[str, Any]) -> None:
        self.args = args
        self.sent: list[Any] = []

    async def send(self, item: Any) -> None:
        self.sent.append(item)


async def test_a_long_list_streams_in_pages_that_fit_a_frame(tmp_path: Path) -> None:
    import msgpack

    with trio.fail_after(60):
        async with service(tmp_path / "data") as (d, _):
            for i in range(400):  # about 800 KB of records: more than one frame holds
                await d.add(f"http://127.0.0.1:9/{i}-{'x' * 1800}")
            ctx = _Ctx({})
            answer = await d._cap_list(ctx)  # type: ignore[arg-type]
    assert answer == {"count": 400}
    assert len(ctx.sent) > 1 and all(len(msgpack.packb(p)) <= 80 * 1024 for p in ctx.sent)
    assert sum(len(p["items"]) for p in ctx.sent) == 400


async def test_a_full_disk_fails_the_download_and_gives_the_space_back(
    small_disk: Path, origin: Origin
) -> None:
    origin.files["/huge"] = Served(payload(40 * MiB, seed=13))
    origin.files["/fits"] = Served(payload(2 * MiB, seed=14))
    with trio.fail_after(90):
        async with service(small_disk / "data") as (d, store):
            rec, _ = await d.add(origin.url("/huge"))
            done = await finished(d, rec["id"])
            assert done["status"] == "Failed" and "disk full" in done["error"], done
            assert store.count() == 0
            rec, _ = await d.add(origin.url("/fits"))
            done = await finished(d, rec["id"])
            assert done["status"] == "Completed", done
            assert blob_bytes(store, done["cid"]) == origin.files["/fits"].data
