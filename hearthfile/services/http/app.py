"""The HTTP gateway as an ASGI application (trio shell over ``GatewayBackend``).

DESIGN.md section 10 is the contract: routes, headers, status codes, access.
hypercorn (its trio worker, over h11) parses HTTP; python-multipart parses
multipart bodies; ``headers.py`` holds the range, entity-tag and disposition
logic. This module routes, checks bounds and access, and moves bytes.

Errors are one line of JSON, ``{"error": ..., "detail": ...}``, never a
traceback. A failure after the first body byte cannot become an error
response any more: the exception propagates, hypercorn closes the connection,
and the client sees a body shorter than its Content-Length (never one that
looks whole).
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import python_multipart
import trio
from python_multipart.multipart import parse_options_header

from hearthfile.blobs.chunker import CHUNK_SIZE, BlobError, Manifest, decode_manifest
from hearthfile.cids import Cid, CidError, canonical_encode, parse_cid
from hearthfile.services.http import headers as hdr
from hearthfile.services.http.backend import BlobMeta, GatewayBackend, GatewayError, Metric

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CACHE_CONTROL: Final = b"public, max-age=29030400, immutable"
MANIFEST_MIME: Final = "application/vnd.hearthfile.manifest+msgpack"
DEFAULT_MIME: Final = "application/octet-stream"
#: Content types a client sends by default that say nothing about the file
#: (curl --data-binary sends the form type): the name decides then.
_NO_MIME: Final = frozenset({"", DEFAULT_MIME, "application/x-www-form-urlencoded"})


@dataclass(frozen=True, slots=True)
class GatewayLimits:
    """Bounds on what one client can make the gateway hold or do."""

    #: Requests handled at once; more get 429 (a flood cannot queue unbounded work).
    max_active_requests: int = 256
    #: One upload (raw or one multipart part).
    max_upload_bytes: int = 1 << 40
    #: A whole multipart body, and its file parts.
    max_multipart_bytes: int = 1 << 40
    max_multipart_parts: int = 1000
    #: A JSON or msgpack manifest body: enough for a blob of ~100 GiB in JSON.
    max_manifest_bytes: int = 32 * 1024 * 1024
    max_list_limit: int = 1000
    #: Longest ``/events`` long poll.
    max_poll_s: float = 60.0


@dataclass(slots=True)
class HttpCounters:
    requests: int = 0
    active: int = 0
    refused: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    by_status: dict[int, int] = field(default_factory=dict)


class Request:
    """What the routes need of an ASGI request."""

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
        self._headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            old = self._headers.get(name)
            self._headers[name] = value if old is None else f"{old}, {value}"
        self.receive = receive

    def header(self, name: str) -> str | None:
        return self._headers.get(name)

    def arg(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[-1] if values else default

    async def body_pieces(self, limit: int) -> Any:
        """The request body as it arrives; 413 past ``limit`` bytes."""
        total = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise GatewayError(400, "bad_request", "client went away mid-body")
            data = message.get("body", b"")
            total += len(data)
            if total > limit:
                raise GatewayError(413, "too_large", f"body over {limit} bytes")
            if data:
                yield data
            if not message.get("more_body", False):
                return

    async def body(self, limit: int) -> bytes:
        parts = [p async for p in self.body_pieces(limit)]
        return b"".join(parts)


class Response:
    """Sends one response; counts what it sends."""

    def __init__(self, send: Send, counters: HttpCounters, head: bool = False) -> None:
        self._send = send
        self._counters = counters
        self._head = head
        self.started = False

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.started = True
        self._counters.by_status[status] = self._counters.by_status.get(status, 0) + 1
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def write(self, data: bytes | memoryview, more: bool = True) -> None:
        if self._head:
            if not more:
                await self._send({"type": "http.response.body", "body": b""})
            return
        self._counters.bytes_sent += len(data)
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def simple(
        self,
        status: int,
        body: bytes,
        content_type: bytes,
        extra: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            *extra,
        ]
        await self.start(status, headers)
        await self.write(body, more=False)

    async def json(
        self, status: int, value: Any, extra: tuple[tuple[bytes, bytes], ...] = ()
    ) -> None:
        body = json.dumps(value, separators=(",", ":")).encode() + b"\n"
        await self.simple(status, body, b"application/json", extra)

    async def error(self, exc: GatewayError) -> None:
        extra: list[tuple[bytes, bytes]] = []
        if exc.retry_after_s is not None:
            extra.append((b"retry-after", str(exc.retry_after_s).encode()))
        if exc.status == 401:
            extra.append((b"www-authenticate", b"Bearer"))
        await self.json(exc.status, {"error": exc.error, "detail": exc.detail}, tuple(extra))


class SubRoutes(Protocol):
    """Routes under one first path segment served by another module (``/downloads``)."""

    async def handle(self, request: Request, response: Response, args: list[str]) -> None: ...


class Gateway:
    """The ASGI app: ``await gateway(scope, receive, send)``."""

    def __init__(
        self,
        backend: GatewayBackend,
        token: bytes,
        limits: GatewayLimits = GatewayLimits(),
        *,
        mounts: dict[str, SubRoutes] | None = None,
    ) -> None:
        self._backend = backend
        self._token = token
        #: First path segment -> its routes; writes among them need the token too.
        self._mounts = mounts or {}
        self.limits = limits
        self.counters = HttpCounters()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        response = Response(send, self.counters, head=request.method == "HEAD")
        counters = self.counters
        counters.requests += 1
        if counters.active >= self.limits.max_active_requests:
            counters.refused += 1
            await response.error(
                GatewayError(429, "busy", "too many requests at once", retry_after_s=1)
            )
            return
        counters.active += 1
        try:
            await self._dispatch(request, response)
        except GatewayError as exc:
            if response.started:
                raise  # mid-body: the connection must close, not end cleanly
            await response.error(exc)
        finally:
            counters.active -= 1

    async def _dispatch(self, request: Request, response: Response) -> None:
        method, parts = request.method, request.path.strip("/").split("/")
        mount = self._mounts.get(parts[0])
        if mount is not None:
            if method not in ("GET", "HEAD"):
                self._authorize(request)
            await mount.handle(request, response, parts[1:])
            return
        route = _ROUTES.get((method, parts[0], len(parts)))
        if route is None and method == "HEAD":
            route = _ROUTES.get(("GET", parts[0], len(parts)))
        if route is None:
            raise _no_route(request.path, parts)
        handler, write = route
        if write:
            self._authorize(request)
        await handler(self, request, response, parts[1:])

    def _authorize(self, request: Request) -> None:
        scheme, _, given = (request.header("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode("latin-1"), self._token
        ):
            raise GatewayError(401, "unauthorized", "writes need Authorization: Bearer <token>")

    # -- blob reads ------------------------------------------------------------

    async def get_blob(self, request: Request, response: Response, args: list[str]) -> None:
        cid = _cid(args[0])
        cache = (request.header("cache-control") or "").lower()
        meta = await self._backend.blob(cid, fetch="only-if-cached" not in cache)
        etag = hdr.etag_of(cid)
        common = [
            (b"etag", etag.encode()),
            (b"cache-control", CACHE_CONTROL),
            (b"accept-ranges", b"bytes"),
        ]
        if hdr.none_match(request.header("if-none-match"), etag):
            await response.start(304, common)
            await response.write(b"", more=False)
            return
        ranges = None
        if hdr.range_applies(request.header("if-range"), etag):
            try:
                ranges = hdr.parse_ranges(request.header("range"), meta.size)
            except hdr.Unsatisfiable as exc:
                extra = (*common, (b"content-range", f"bytes */{meta.size}".encode()))
                await response.json(
                    416, {"error": "range_not_satisfiable", "detail": str(exc)}, extra
                )
                return
        name = args[1] if len(args) > 1 else meta.name
        common += [
            (b"x-content-type-options", b"nosniff"),
            (
                b"content-disposition",
                hdr.content_disposition(name, attachment=_flag(request, "download")),
            ),
        ]
        mime = (meta.mime or DEFAULT_MIME).encode()
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_on_disconnect, request, scope)
                await self._send_blob(response, meta, ranges, mime, common)
                nursery.cancel_scope.cancel()

    async def _send_blob(
        self,
        response: Response,
        meta: BlobMeta,
        ranges: list[hdr.ByteRange] | None,
        mime: bytes,
        common: list[tuple[bytes, bytes]],
    ) -> None:
        if ranges is None or len(ranges) == 1:
            span = ranges[0] if ranges else hdr.ByteRange(0, meta.size)
            headers = [
                *common,
                (b"content-type", mime),
                (b"content-length", str(span.length).encode()),
            ]
            status = 200
            if ranges:
                status = 206
                headers.append((b"content-range", span.content_range(meta.size).encode()))
            await self._stream(response, meta, [span], status, headers, [])
            return
        boundary = secrets.token_hex(16)
        heads = [
            f"\r\n--{boundary}\r\nContent-Type: {mime.decode()}\r\n"
            f"Content-Range: {r.content_range(meta.size)}\r\n\r\n".encode()
            for r in ranges
        ]
        tail = f"\r\n--{boundary}--\r\n".encode()
        length = sum(len(h) + r.length for h, r in zip(heads, ranges, strict=True)) + len(tail)
        headers = [
            *common,
            (b"content-type", f"multipart/byteranges; boundary={boundary}".encode()),
            (b"content-length", str(length).encode()),
        ]
        await self._stream(response, meta, ranges, 206, headers, heads, tail)

    async def _stream(
        self,
        response: Response,
        meta: BlobMeta,
        spans: list[hdr.ByteRange],
        status: int,
        headers: list[tuple[bytes, bytes]],
        heads: list[bytes],
        tail: bytes = b"",
    ) -> None:
        """Headers go out with the first verified byte (or part head), so a fetch
        that fails before it still gets its 404/502/504."""

        async def write(data: bytes | memoryview) -> None:
            if not response.started:
                await response.start(status, headers)
            await response.write(data)

        if response._head:
            await response.start(status, headers)
            await response.write(b"", more=False)
            return
        for index, span in enumerate(spans):
            if heads:
                await write(heads[index])
            if span.length:
                await self._backend.read(meta, span.start, span.end, write)
        if not response.started:
            await response.start(status, headers)
        await response.write(tail, more=False)

    async def get_chunk(self, request: Request, response: Response, args: list[str]) -> None:
        data = await self._backend.chunk(_cid(args[0]))
        await response.simple(200, data, DEFAULT_MIME.encode(), _immutable(args[0]))

    async def get_manifest(self, request: Request, response: Response, args: list[str]) -> None:
        data = await self._backend.manifest_bytes(_cid(args[0]))
        await response.simple(200, data, MANIFEST_MIME.encode(), _immutable(args[0]))

    async def list_blobs(self, request: Request, response: Response, args: list[str]) -> None:
        limit = page_limit(request, self.limits.max_list_limit)
        prefix, after = request.arg("prefix"), request.arg("after")
        items = await self._backend.list_blobs(prefix, after, limit)
        more = len(items) == limit
        await response.json(
            200, {"items": items, "next": items[-1]["cid"] if more and items else None}
        )

    # -- writes ----------------------------------------------------------------

    async def put_blob(self, request: Request, response: Response, args: list[str]) -> None:
        name = hdr.safe_filename(request.arg("name")) or None
        mime = _mime(request.header("content-type"))
        async with self._backend.open_sink(name, mime) as sink:
            async for piece in request.body_pieces(self.limits.max_upload_bytes):
                self.counters.bytes_received += len(piece)
                await sink.write(piece)
            added = await sink.finish()
        await response.json(201, added.as_json())

    async def post_blob(self, request: Request, response: Response, args: list[str]) -> None:
        content_type, options = parse_options_header(request.header("content-type") or "")
        boundary = options.get(b"boundary")
        if content_type != b"multipart/form-data" or not boundary:
            raise GatewayError(
                415,
                "unsupported_media_type",
                "POST /blob takes multipart/form-data with a boundary",
            )
        upload = _MultipartUpload(self, boundary)
        added = await upload.run(request)
        await response.json(201, [a.as_json() for a in added])

    async def plan(self, request: Request, response: Response, args: list[str]) -> None:
        manifest = await self._manifest_body(request)
        missing = await self._backend.plan(manifest)
        await response.json(
            200, {"upload_required": bool(missing), "missing": _index_ranges(missing)}
        )

    async def commit(self, request: Request, response: Response, args: list[str]) -> None:
        manifest = await self._manifest_body(request)
        added = await self._backend.commit(manifest)
        await response.json(201, {"cid": added.cid, **added.as_json()})

    async def put_chunk(self, request: Request, response: Response, args: list[str]) -> None:
        cid = _cid(args[0])
        data = await request.body(CHUNK_SIZE)
        self.counters.bytes_received += len(data)
        await self._backend.put_chunk(cid, data)
        await response.json(201, {"cid": cid, "size": len(data)})

    async def _manifest_body(self, request: Request) -> Manifest:
        data = await request.body(self.limits.max_manifest_bytes)
        kind = (request.header("content-type") or "").split(";")[0].strip().lower()
        try:
            if kind == MANIFEST_MIME:
                return decode_manifest(data)
            return _manifest_from_json(data)
        except BlobError as exc:
            raise GatewayError(400, "manifest_invalid", exc.detail) from None

    async def delete_blob(self, request: Request, response: Response, args: list[str]) -> None:
        cid = _cid(args[0])
        await self._backend.remove(cid)
        await response.json(200, {"cid": cid, "removed": True})

    async def pin(self, request: Request, response: Response, args: list[str]) -> None:
        cid = _cid(args[0])
        if args[1] != "pin":
            raise GatewayError(404, "not_found", f"no route {request.path}")
        pinned = request.method == "PUT"
        await self._backend.set_pin(cid, pinned)
        await response.json(200, {"cid": cid, "pinned": pinned})

    # -- node ------------------------------------------------------------------

    async def status(self, request: Request, response: Response, args: list[str]) -> None:
        await response.json(200, self._backend.status())

    async def metrics(self, request: Request, response: Response, args: list[str]) -> None:
        text = render_metrics([*self._backend.metrics(), *self._http_metrics()])
        await response.simple(200, text.encode(), b"text/plain; version=0.0.4; charset=utf-8")

    def _http_metrics(self) -> list[Metric]:
        c = self.counters
        return [
            Metric("http_requests_total", "counter", "HTTP requests received.", c.requests),
            Metric("http_requests_active", "gauge", "HTTP requests being handled.", c.active),
            Metric(
                "http_requests_refused_total",
                "counter",
                "HTTP requests refused with 429.",
                c.refused,
            ),
            Metric(
                "http_sent_bytes_total", "counter", "Body bytes the gateway sent.", c.bytes_sent
            ),
            Metric(
                "http_partial_responses_total",
                "counter",
                "206 answers (range requests served).",
                c.by_status.get(206, 0),
            ),
            Metric(
                "http_received_bytes_total",
                "counter",
                "Upload bytes the gateway received.",
                c.bytes_received,
            ),
        ]

    async def events(self, request: Request, response: Response, args: list[str]) -> None:
        try:
            since = int(request.arg("since", "0"))
            timeout_s = min(float(request.arg("timeout", "0")), self.limits.max_poll_s)
        except ValueError:
            raise GatewayError(
                400, "bad_request", "since is an event id, timeout seconds"
            ) from None
        if "text/event-stream" in (request.header("accept") or ""):
            await self._event_stream(request, response, since)
            return
        found = self._backend.events_since(since)
        if not found and timeout_s > 0:
            with trio.move_on_after(timeout_s):
                await self._backend.wait_events(since)
            found = self._backend.events_since(since)
        await response.json(200, found)

    async def _event_stream(self, request: Request, response: Response, since: int) -> None:
        """Server-sent events, one per node event, until the client goes away."""
        await response.start(
            200, [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        )
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_on_disconnect, request, scope)
                while True:
                    for event in self._backend.events_since(since):
                        since = event["id"]
                        line = json.dumps(event, separators=(",", ":"))
                        await response.write(f"id: {since}\ndata: {line}\n\n".encode())
                    await self._backend.wait_events(since)


class _MultipartUpload:
    """A multipart/form-data body streamed part by part into the store: each file
    part becomes one blob; other fields are ignored."""

    def __init__(self, gateway: Gateway, boundary: bytes) -> None:
        self._gateway = gateway
        self._limits = gateway.limits
        self._events: list[tuple[str, bytes]] = []
        self._field = b""
        self._value = b""
        callbacks: Any = {
            "on_part_begin": lambda: self._events.append(("begin", b"")),
            "on_part_data": lambda d, s, e: self._events.append(("data", bytes(d[s:e]))),
            "on_part_end": lambda: self._events.append(("end", b"")),
            "on_header_field": self._on_field,
            "on_header_value": self._on_value,
            "on_header_end": self._on_header_end,
        }
        self._parser = python_multipart.MultipartParser(
            boundary, callbacks, max_size=self._limits.max_multipart_bytes
        )

    def _on_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _on_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        self._events.append(("header", self._field.lower() + b"\0" + self._value))
        self._field = self._value = b""

    async def run(self, request: Request) -> list[Any]:
        added: list[Any] = []
        part_headers: dict[bytes, bytes] = {}
        sink_cm: Any = None
        sink: Any = None
        try:
            async for piece in request.body_pieces(self._limits.max_multipart_bytes):
                self._gateway.counters.bytes_received += len(piece)
                try:
                    self._parser.write(piece)
                except python_multipart.exceptions.MultipartParseError as exc:
                    raise GatewayError(400, "bad_request", f"multipart: {exc}") from None
                events, self._events = self._events, []
                for kind, data in events:
                    if kind == "begin":
                        part_headers = {}
                    elif kind == "header":
                        name, _, value = data.partition(b"\0")
                        part_headers[name] = value
                    elif kind == "data":
                        if sink is None and sink_cm is None:
                            sink_cm, sink = await self._open(part_headers, len(added))
                        if sink is not None:
                            await sink.write(data)
                    elif kind == "end":
                        if sink is None and sink_cm is None:
                            sink_cm, sink = await self._open(part_headers, len(added))
                        if sink is not None:
                            added.append(await sink.finish())
                            await sink_cm.__aexit__(None, None, None)
                        sink_cm = sink = None
            self._parser.finalize()
        finally:
            if sink_cm is not None and sink is not None:
                with trio.CancelScope(shield=True):
                    await sink_cm.__aexit__(None, None, None)
        if not added:
            raise GatewayError(400, "bad_request", "no file part in the multipart body")
        return added

    async def _open(self, part_headers: dict[bytes, bytes], count: int) -> tuple[Any, Any]:
        """A sink for a file part (one with a filename); (None, None) for other fields."""
        _, options = parse_options_header(part_headers.get(b"content-disposition", b""))
        filename = options.get(b"filename")
        if filename is None:
            return object(), None
        if count >= self._limits.max_multipart_parts:
            raise GatewayError(
                413, "too_many_parts", f"more than {self._limits.max_multipart_parts} files"
            )
        name = hdr.safe_filename(filename.decode("utf-8", "replace")) or None
        mime = _mime(part_headers.get(b"content-type", b"").decode("latin-1"))
        cm = self._gateway._backend.open_sink(name, mime)
        return cm, await cm.__aenter__()


Handler = Callable[[Gateway, Request, Response, list[str]], Awaitable[None]]

#: (method, first path segment, number of segments) -> (handler, is a write).
_ROUTES: Final[dict[tuple[str, str, int], tuple[Handler, bool]]] = {
    ("GET", "blob", 2): (Gateway.get_blob, False),
    ("GET", "blob", 3): (Gateway.get_blob, False),
    ("GET", "chunk", 2): (Gateway.get_chunk, False),
    ("GET", "manifest", 2): (Gateway.get_manifest, False),
    ("GET", "blobs", 1): (Gateway.list_blobs, False),
    ("GET", "status", 1): (Gateway.status, False),
    ("GET", "metrics", 1): (Gateway.metrics, False),
    ("GET", "events", 1): (Gateway.events, False),
    ("PUT", "blob", 1): (Gateway.put_blob, True),
    ("POST", "blob", 1): (Gateway.post_blob, True),
    ("PUT", "chunk", 2): (Gateway.put_chunk, True),
    ("DELETE", "blob", 2): (Gateway.delete_blob, True),
    ("PUT", "blob", 3): (Gateway.pin, True),
    ("DELETE", "blob", 3): (Gateway.pin, True),
}
#: POST /blob/plan and /blob/commit share the shape of /blob/{cid}.
_POST_BLOB: Final[dict[str, Handler]] = {"plan": Gateway.plan, "commit": Gateway.commit}


async def _post_blob_action(
    gateway: Gateway, request: Request, response: Response, args: list[str]
) -> None:
    handler = _POST_BLOB.get(args[0])
    if handler is None:
        raise GatewayError(404, "not_found", f"no route POST {request.path}")
    await handler(gateway, request, response, args)


_ROUTES[("POST", "blob", 2)] = (_post_blob_action, True)


def _no_route(path: str, parts: list[str]) -> GatewayError:
    if any(key[1] == parts[0] and key[2] == len(parts) for key in _ROUTES):
        return GatewayError(405, "method_not_allowed", f"method not allowed on {path}")
    return GatewayError(404, "not_found", f"no route {path}")


def _cid(text: str) -> Cid:
    try:
        return parse_cid(text)
    except CidError:
        raise GatewayError(
            400, "bad_request", "expected a CID: blake3:<64 lowercase hex>"
        ) from None


def _flag(request: Request, name: str) -> bool:
    return request.arg(name) not in ("", "0", "false")


def _immutable(cid: str) -> tuple[tuple[bytes, bytes], ...]:
    return ((b"etag", hdr.etag_of(cid).encode()), (b"cache-control", CACHE_CONTROL))


def _mime(content_type: str | None) -> str | None:
    kind = (content_type or "").split(";")[0].strip().lower()
    return None if kind in _NO_MIME or "/" not in kind else kind


def _index_ranges(indices: list[int]) -> list[list[int]]:
    """Sorted chunk indices as [start, end) runs."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and runs[-1][1] == i:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1])
    return runs


def _manifest_from_json(data: bytes) -> Manifest:
    """A manifest sent as JSON: the canonical fields, re-encoded canonically and
    checked by the same decoder as the wire form; ``name`` and ``mime`` advisory."""
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError):
        raise BlobError("manifest_invalid", "body is neither JSON nor a msgpack manifest") from None
    if not isinstance(raw, dict):
        raise BlobError("manifest_invalid", "expected a JSON object")
    extra = {k: raw.pop(k, None) for k in ("name", "mime")}
    if not all(v is None or isinstance(v, str) for v in extra.values()):
        raise BlobError("manifest_invalid", "name and mime must be text")
    try:
        encoded = canonical_encode(raw)
    except (TypeError, ValueError) as exc:
        raise BlobError("manifest_invalid", str(exc)) from None
    m = decode_manifest(encoded)
    name = hdr.safe_filename(extra["name"]) or None
    return Manifest(m.size, m.chunk_size, m.chunks, m.content, name, _mime(extra["mime"]))


def render_metrics(metrics: list[Metric]) -> str:
    """Prometheus text format 0.0.4: HELP, TYPE and one sample per metric."""
    lines = []
    for m in metrics:
        name = "hearthfile_" + m.name
        lines += [f"# HELP {name} {m.help}", f"# TYPE {name} {m.kind}", f"{name} {m.value:g}"]
    return "\n".join(lines) + "\n"


async def _cancel_on_disconnect(request: Request, scope: trio.CancelScope) -> None:
    """Stop work for a client that went away (a GET's body is empty, so the next
    message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def page_limit(request: Request, most: int, default: int = 100) -> int:
    """A list's ``?limit=``: 1..``most``, ``default`` when absent; else 400."""
    try:
        limit = int(request.arg("limit", str(default)))
    except ValueError:
        raise GatewayError(400, "bad_request", "limit must be an integer") from None
    if not 1 <= limit <= most:
        raise GatewayError(400, "bad_request", f"limit must be 1..{most}")
    return limit
