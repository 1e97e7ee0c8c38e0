"""URL downloads: records, statuses, the queue and resume decisions (pure).

DESIGN.md section 12. A download caches one external URL into the store. Its
record moves through five statuses::

    Pending --start--> InProgress --finish--> Completed
       ^  \\               |  \\
       |   pause        pause  fail --> Failed --resume--> Pending
       |     \\             v
       +--resume------- Paused

At most ``max_active`` downloads are InProgress; the rest wait as Pending and
are started oldest first. A daemon that stops (or is killed) with downloads
InProgress finds them InProgress on restart and puts them back to Pending, so
they start again in their old order.

Resuming. The bytes already in the store are a prefix of the file. A resumed
request asks for the rest (``Range: bytes=N-``) and makes it conditional on the
file being the one we started (``If-Range`` with the strong ETag, else the
Last-Modified date; a weak ETag cannot validate a range, RFC 9110 13.1.5). The
origin's answer decides what happens (``decide``):

- 206 whose range starts at N, with the same validator: continue at N.
- 200: the origin ignored the range, or the file changed so ``If-Range``
  failed. The body is the whole file, so we restart from zero on that same
  response and drop the old prefix.
- 206 at another offset, or with a validator that differs from ours: the
  file is not the one we have a prefix of; restart from zero.
- 416 on a resumed request: the file shrank below our prefix; restart.
- Any other status: fail with the status in the error.

This module reads no clock and does no I/O: the shell passes ``now`` and the
response's status and headers.
"""

from __future__ import annotations

import datetime
import enum
import mimetypes
import re
import urllib.parse
from dataclasses import dataclass, replace
from typing import Any, Final

from hearthfile.cids import Cid, cid_of

#: Bounds on what a caller may hand us (a URL rides in every list reply).
MAX_URL_BYTES: Final = 8 * 1024
MAX_NAME_BYTES: Final = 255
DEFAULT_NAME: Final = "download"
_EXPECT_RE: Final = re.compile(r"(blake3|sha256):([0-9a-f]{64})")
#: Content types that say nothing about the file: the name decides the mime then.
_NO_MIME: Final = frozenset({"", "application/octet-stream", "binary/octet-stream"})


#: Domain tag of a URL key (``url_key``, docs/PROTOCOL.md "URL downloads"): keeps a
#: key apart from the CID of a blob whose bytes happen to be a URL.
URL_KEY_TAG: Final = b"hearthfile/url/1\x00"


def url_key(url: str) -> Cid:
    """The key under which a node announces that it cached ``url``.

    Announced among the node's holdings in its signed adverts (DESIGN.md 12:
    "the URL -> CID mapping is announced with the node's holdings"), so any
    node finds who cached a URL the way it finds who holds a blob; the holder
    then answers ``download.resolve`` with the blob's CID."""
    return cid_of(URL_KEY_TAG + url.encode())


class DownloadError(ValueError):
    """A request the caller must fix: a bad URL, name or expect."""


class Status(enum.StrEnum):
    PENDING = "Pending"
    IN_PROGRESS = "InProgress"
    PAUSED = "Paused"
    COMPLETED = "Completed"
    FAILED = "Failed"


class Source(enum.StrEnum):
    ORIGIN = "origin"
    PEERS = "peers"


@dataclass(frozen=True, slots=True)
class Validator:
    """What identifies one version of the origin's file."""

    etag: str | None = None
    last_modified: str | None = None

    @property
    def if_range(self) -> str | None:
        """The ``If-Range`` value, if any can validate a range request."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified

    def differs(self, other: Validator) -> bool:
        """True when both sides name a validator of the same kind and they differ."""
        if self.etag and other.etag:
            return self.etag != other.etag
        if self.last_modified and other.last_modified:
            return self.last_modified != other.last_modified
        return False


@dataclass(frozen=True, slots=True)
class Record:
    """One download, as stored and as shown (``as_json``)."""

    id: str
    url: str
    name: str
    status: Status
    created_at: float
    updated_at: float
    downloaded_bytes: int = 0
    size: int | None = None
    cid: str | None = None
    error: str | None = None
    source: Source = Source.ORIGIN
    expect: str | None = None
    mime: str | None = None
    validator: Validator = Validator()
    #: The blob holding the bytes stored so far (a prefix of the file), if any.
    partial_cid: str | None = None
    #: Set by ``refresh``: go to the origin even if a peer holds the URL.
    refresh: bool = False

    @property
    def progress(self) -> float:
        if self.status is Status.COMPLETED:
            return 100.0
        if not self.size:
            return 0.0
        return round(min(100.0, 100.0 * self.downloaded_bytes / self.size), 2)

    def as_json(self, speed_bps: float = 0.0) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "name": self.name,
            "status": self.status.value,
            "progress": self.progress,
            "downloaded_bytes": self.downloaded_bytes,
            "size": self.size,
            "speed_bps": round(speed_bps) if self.status is Status.IN_PROGRESS else 0,
            "cid": self.cid,
            "error": self.error,
            "created_at": iso8601(self.created_at),
            "updated_at": iso8601(self.updated_at),
            "source": self.source.value,
        }


def iso8601(t: float) -> str:
    """UTC, second precision, without reading a clock or a time zone database."""
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- what a caller may ask --------------------------------------------------------------


def check_url(url: object) -> str:
    """An absolute http or https URL with a host; anything else is refused."""
    if not isinstance(url, str) or not url:
        raise DownloadError("url: expected an http or https URL")
    if len(url.encode()) > MAX_URL_BYTES:
        raise DownloadError(f"url: longer than {MAX_URL_BYTES} bytes")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise DownloadError("url: contains spaces or control characters")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise DownloadError(f"url: only http and https are fetched, not {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise DownloadError("url: no host")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise DownloadError(f"url: {exc}") from None
    return url


def check_expect(expect: object) -> str | None:
    """``blake3:HEX`` or ``sha256:HEX`` (64 lowercase hex digits), or None."""
    if expect is None or expect == "":
        return None
    if not isinstance(expect, str) or not _EXPECT_RE.fullmatch(expect.lower()):
        raise DownloadError("expect: expected blake3:<64 hex> or sha256:<64 hex>")
    return expect.lower()


def clean_name(name: str) -> str:
    """A file name safe to store and to put in a URL path: no separators, no controls."""
    name = name.replace("/", "_").replace("\\", "_")
    name = "".join(c for c in name if c.isprintable()).strip().strip(".")
    while len(name.encode()) > MAX_NAME_BYTES:
        name = name[:-1]
    return name


def check_name(name: object) -> str | None:
    if name is None or name == "":
        return None
    if not isinstance(name, str):
        raise DownloadError("name: expected text")
    cleaned = clean_name(name)
    if not cleaned:
        raise DownloadError("name: nothing left once separators and control characters go")
    return cleaned


def name_from_url(url: str) -> str:
    """The last path segment of the URL, decoded, else ``download``."""
    path = urllib.parse.urlsplit(url).path
    last = urllib.parse.unquote(path.rsplit("/", 1)[-1])
    return clean_name(last) or DEFAULT_NAME


def mime_of(content_type: str | None, name: str) -> str | None:
    """The origin's type unless it says nothing, else a guess from the name."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind not in _NO_MIME and "/" in kind:
        return kind
    return mimetypes.guess_type(name, strict=False)[0]


def new_record(
    id_: str, url: str, name: str | None, expect: str | None, refresh: bool, now: float
) -> Record:
    return Record(
        id=id_,
        url=url,
        name=name or name_from_url(url),
        status=Status.PENDING,
        created_at=now,
        updated_at=now,
        expect=expect,
        refresh=refresh,
    )


# -- transitions ------------------------------------------------------------------------


class TransitionError(DownloadError):
    """An operation that makes no sense in the record's status (pause a Completed one)."""


def start(rec: Record, now: float) -> Record:
    _require(rec, "start", Status.PENDING)
    return replace(rec, status=Status.IN_PROGRESS, error=None, updated_at=now)


def pause(rec: Record, now: float) -> Record:
    if rec.status is Status.PAUSED:
        return rec
    _require(rec, "pause", Status.PENDING, Status.IN_PROGRESS)
    return replace(rec, status=Status.PAUSED, updated_at=now)


def resume(rec: Record, now: float, *, refresh: bool = False) -> Record:
    """Paused or Failed -> Pending; Pending and InProgress stay; Completed stays
    unless ``refresh`` (go to the origin again)."""
    if rec.status in (Status.PENDING, Status.IN_PROGRESS):
        return rec
    if rec.status is Status.COMPLETED and not refresh:
        return rec
    if rec.status is Status.COMPLETED:
        rec = replace(rec, downloaded_bytes=0, size=None, validator=Validator(), cid=None)
    return replace(
        rec,
        status=Status.PENDING,
        error=None,
        refresh=refresh or rec.refresh,
        source=Source.ORIGIN if refresh else rec.source,
        updated_at=now,
    )


def interrupted(rec: Record, now: float) -> Record:
    """A record found InProgress at start-up: its run died with the daemon."""
    if rec.status is not Status.IN_PROGRESS:
        return rec
    return replace(rec, status=Status.PENDING, updated_at=now)


def fail(rec: Record, error: str, now: float) -> Record:
    """Failed keeps nothing partial: a retry starts from zero."""
    return replace(
        rec,
        status=Status.FAILED,
        error=error,
        partial_cid=None,
        downloaded_bytes=0,
        updated_at=now,
    )


def complete(rec: Record, cid: str, size: int, source: Source, now: float) -> Record:
    return replace(
        rec,
        status=Status.COMPLETED,
        cid=cid,
        size=size,
        downloaded_bytes=size,
        source=source,
        partial_cid=None,
        error=None,
        refresh=False,
        updated_at=now,
    )


def _require(rec: Record, op: str, *allowed: Status) -> None:
    if rec.status not in allowed:
        raise TransitionError(f"cannot {op} a download that is {rec.status.value}")


def to_start(records: list[Record], max_active: int) -> list[Record]:
    """The Pending records to start now, oldest first, so at most ``max_active`` run."""
    active = sum(r.status is Status.IN_PROGRESS for r in records)
    pending = sorted(
        (r for r in records if r.status is Status.PENDING), key=lambda r: (r.created_at, r.id)
    )
    return pending[: max(0, max_active - active)]


# -- resume decisions -------------------------------------------------------------------


def request_headers(offset: int, validator: Validator) -> dict[str, str]:
    """Headers of a request for the file from ``offset`` on.

    Without a validator a range cannot be made safe (the file may have changed),
    so the request starts from zero."""
    headers = {"Accept-Encoding": "identity"}
    if offset > 0 and validator.if_range:
        headers["Range"] = f"bytes={offset}-"
        headers["If-Range"] = validator.if_range
    return headers


class Action(enum.Enum):
    CONTINUE = "continue"  # the body continues our prefix at the offset we asked
    RESTART = "restart"  # the body is the whole file: drop the prefix, start at zero
    RETRY_FROM_ZERO = "retry_from_zero"  # useless body: ask again, from zero
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    #: The whole file's size when the answer says it.
    size: int | None = None
    validator: Validator = Validator()
    error: str = ""


_CONTENT_RANGE_RE: Final = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def decide(
    offset: int,
    ours: Validator,
    status: int,
    headers: dict[str, str],
    reason: str = "",
) -> Decision:
    """What to do with an origin's answer to a request from ``offset`` (see module doc).

    ``headers`` has lower-case names."""
    theirs = Validator(headers.get("etag"), headers.get("last-modified"))
    if status == 200:
        size = _int_or_none(headers.get("content-length"))
        action = Action.RESTART if offset > 0 else Action.CONTINUE
        return Decision(action, size, theirs)
    if status == 206:
        match = _CONTENT_RANGE_RE.fullmatch(headers.get("content-range", "").strip())
        if match is None:
            return Decision(Action.FAIL, error="origin sent 206 without a usable Content-Range")
        start, total = int(match[1]), _int_or_none(match[3])
        if start != offset or ours.differs(theirs):
            return Decision(Action.RETRY_FROM_ZERO, total, theirs)
        return Decision(Action.CONTINUE, total, theirs)
    if status == 416 and offset > 0:
        return Decision(Action.RETRY_FROM_ZERO, None, theirs)
    text = f"HTTP {status} {reason}".strip()
    return Decision(Action.FAIL, error=f"origin answered {text}")


def _int_or_none(text: str | None) -> int | None:
    if text is None or not text.strip().isdigit():
        return None
    return int(text.strip())


def over_limit(size: int | None, max_bytes: int) -> str | None:
    if size is not None and size > max_bytes:
        return f"size {size} bytes is over downloads.max_bytes ({max_bytes})"
    return None


class SpeedMeter:
    """Bytes per second over the last few seconds (the shell passes ``now``)."""

    WINDOW_S: Final = 3.0

    def __init__(self) -> None:
        self._samples: list[tuple[float, int]] = []

    def add(self, now: float, total_bytes: int) -> None:
        self._samples.append((now, total_bytes))
        while len(self._samples) > 2 and now - self._samples[1][0] > self.WINDOW_S:
            self._samples.pop(0)

    def rate(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
