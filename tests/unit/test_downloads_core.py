"""The download core: records, transitions, the queue and resume decisions (pure)."""

from __future__ import annotations

import pytest

from hearthfile.services.downloads import core
from hearthfile.services.downloads.core import Action, Status, Validator


def rec(id_: str = "a", url: str = "http://x/f.bin", now: float = 100.0) -> core.Record:
    return core.new_record(id_, url, None, None, False, now)


def test_new_record_names_itself_from_the_url_and_shows_the_contract_fields() -> None:
    r = core.new_record("a", "https://h/dir/My%20File.tar.gz?x=1", None, None, False, 0.0)
    assert r.name == "My File.tar.gz"
    assert set(r.as_json()) == {
        "id", "url", "name", "status", "progress", "downloaded_bytes", "size", "speed_bps",
        "cid", "error", "created_at", "updated_at", "source",
    }  # fmt: skip
    assert r.as_json()["status"] == "Pending"
    assert r.as_json()["created_at"] == "1970-01-01T00:00:00Z"
    assert core.new_record("b", "http://h/", None, None, False, 0).name == "download"


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "ftp://h/x", "http:///nohost", "gopher://h", "", "http://h/a b", 5],
)
def test_only_http_and_https_urls_with_a_host(url: object) -> None:
    with pytest.raises(core.DownloadError):
        core.check_url(url)


def test_expect_and_name_checks() -> None:
    assert core.check_expect("SHA256:" + "AB" * 32) == "sha256:" + "ab" * 32
    assert core.check_expect(None) is None
    for bad in ("md5:" + "0" * 32, "blake3:xyz", "blake3:" + "0" * 63):
        with pytest.raises(core.DownloadError):
            core.check_expect(bad)
    assert core.check_name("../etc/passwd") == "_etc_passwd"
    with pytest.raises(core.DownloadError):
        core.check_name("\x00\x01")


def test_transitions() -> None:
    r = core.start(rec(), 1)
    assert r.status is Status.IN_PROGRESS
    paused = core.pause(r, 2)
    assert paused.status is Status.PAUSED
    assert core.resume(paused, 3).status is Status.PENDING
    failed = core.fail(r, "origin answered HTTP 404", 4)
    assert (failed.status, failed.partial_cid, failed.error) == (
        Status.FAILED,
        None,
        "origin answered HTTP 404",
    )
    assert core.resume(failed, 5).status is Status.PENDING  # a retry
    done = core.complete(r, "blake3:" + "0" * 64, 10, core.Source.ORIGIN, 6)
    assert done.progress == 100.0
    assert core.resume(done, 7) is done  # nothing to resume...
    again = core.resume(done, 7, refresh=True)  # ...unless asked to go to the origin
    assert (again.status, again.cid, again.refresh) == (Status.PENDING, None, True)
    with pytest.raises(core.TransitionError):
        core.pause(done, 8)
    with pytest.raises(core.TransitionError):
        core.start(paused, 8)
    assert core.interrupted(r, 9).status is Status.PENDING


def test_queue_starts_the_oldest_pending_up_to_max_active() -> None:
    records = [rec(str(i), now=float(10 - i)) for i in range(5)]
    records[4] = core.start(records[4], 0)  # oldest, already running
    started = core.to_start(records, 3)
    assert [r.id for r in started] == ["3", "2"]
    assert core.to_start(records, 1) == []


def test_request_headers_resume_only_with_a_validator() -> None:
    assert "Range" not in core.request_headers(0, Validator('"e"'))
    h = core.request_headers(500, Validator('"e"', "Tue, 01 Jan 2030 00:00:00 GMT"))
    assert (h["Range"], h["If-Range"]) == ("bytes=500-", '"e"')
    weak = core.request_headers(500, Validator('W/"e"', "Tue, 01 Jan 2030 00:00:00 GMT"))
    assert weak["If-Range"] == "Tue, 01 Jan 2030 00:00:00 GMT"
    assert "Range" not in core.request_headers(500, Validator())


def test_decide_on_the_origins_answer() -> None:
    ours = Validator('"v1"')
    cont = core.decide(100, ours, 206, {"content-range": "bytes 100-999/1000", "etag": '"v1"'})
    assert (cont.action, cont.size) == (Action.CONTINUE, 1000)
    # A 200 to a range request: ranges ignored or If-Range failed -> the body is the file.
    full = core.decide(100, ours, 200, {"content-length": "1000", "etag": '"v2"'})
    assert (full.action, full.size, full.validator.etag) == (Action.RESTART, 1000, '"v2"')
    assert core.decide(0, Validator(), 200, {}).action is Action.CONTINUE
    moved = core.decide(100, ours, 206, {"content-range": "bytes 0-999/1000"})
    assert moved.action is Action.RETRY_FROM_ZERO
    changed = core.decide(100, ours, 206, {"content-range": "bytes 100-999/1000", "etag": '"v2"'})
    assert changed.action is Action.RETRY_FROM_ZERO
    assert core.decide(100, ours, 416, {}).action is Action.RETRY_FROM_ZERO
    missing = core.decide(0, ours, 404, {}, "Not Found")
    assert (missing.action, missing.error) == (Action.FAIL, "origin answered HTTP 404 Not Found")
    assert core.decide(0, ours, 500, {}).error == "origin answered HTTP 500"
    assert core.decide(5, ours, 206, {"content-range": "junk"}).action is Action.FAIL


def test_limits_and_speed() -> None:
    assert core.over_limit(11, 10) is not None
    assert core.over_limit(None, 10) is None
    meter = core.SpeedMeter()
    meter.add(0.0, 0)
    meter.add(1.0, 1000)
    meter.add(2.0, 3000)
    assert meter.rate() == 1500.0
    meter.add(10.0, 11000)  # old samples leave the window
    assert meter.rate() == 1000.0


def test_mime_from_the_origin_or_the_name() -> None:
    assert core.mime_of("text/plain; charset=utf-8", "x.bin") == "text/plain"
    assert core.mime_of("application/octet-stream", "x.json") == "application/json"
    assert core.mime_of(None, "noext") is None


def test_url_key_is_blake3_of_the_tagged_url() -> None:
    import blake3

    key = core.url_key("https://example.org/a.iso")
    assert (
        key
        == "blake3:" + blake3.blake3(b"hearthfile/url/1\x00https://example.org/a.iso").hexdigest()
    )
    assert key != core.url_key("https://example.org/a.iso?")
