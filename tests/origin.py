"""A web server on loopback for the download tests: an origin we can make misbehave.

It runs trio in a thread of its own (the tests block on CLI subprocesses) and
speaks HTTP/1.1 through h11. Each file it serves has a behaviour: honour or
ignore ranges, an ETag that can change, a rate limit, a connection dropped
after N body bytes, a redirect, a fixed error status. Every request is logged
(path, Range, If-Range, status, body bytes sent) so tests can show what the
node asked for and how much it cost the origin.

Run alone (``python -m tests.origin FILE``) it serves FILE at ``/file`` and
prints its port: the benchmark uses that.
"""

from __future__ import annotations

import mmap
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import h11
import trio

from hearthfile.services.http.headers import Unsatisfiable, parse_ranges

PIECE = 64 * 1024


@dataclass
class Served:
    """One path's content and behaviour."""

    data: bytes = b""
    etag: str | None = '"v1"'
    last_modified: str | None = None
    ignore_ranges: bool = False
    #: Bytes per second of body, or None for as fast as possible.
    rate: float | None = None
    #: Close the connection after this many body bytes, this many times.
    drop_after: int | None = None
    drops_left: int = 0
    #: Stop sending after this many body bytes until ``release`` is set (the kill -9
    #: test holds the body there, so the kill surely lands mid-download).
    hold_after: int | None = None
    release: threading.Event = field(default_factory=threading.Event)
    #: Called when a connection is dropped (to change the file between attempts).
    on_drop: Callable[[Served], None] | None = None
    redirect: str | None = None
    status: int = 200
    content_type: str = "application/octet-stream"


@dataclass
class Hit:
    path: str
    range: str | None
    if_range: str | None
    status: int
    sent: int = 0


@dataclass
class Origin:
    files: dict[str, Served] = field(default_factory=dict)
    log: list[Hit] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrustedTrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    def start(self) -> Origin:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("origin did not start")
        return self

    def stop(self) -> None:
        if self._token is not None and self._scope is not None:
            self._token.run_sync_soon(self._scope.cancel)
        self._thread.join(30)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def hits(self, path: str) -> list[Hit]:
        return [h for h in list(self.log) if h.path == path]

    def body_bytes(self, path: str) -> int:
        return sum(h.sent for h in self.hits(path))

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as self._scope:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            self.port = listeners[0].socket.getsockname()[1]
            self._ready.set()
            await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = await _next_event(conn, stream)
                if not isinstance(event, h11.Request):
                    return
                while not isinstance(await _next_event(conn, stream), h11.EndOfMessage):
                    pass
                if not await self._answer(conn, stream, event):
                    return
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            return
        finally:
            await stream.aclose()

    async def _answer(
        self, conn: h11.Connection, stream: trio.SocketStream, req: h11.Request
    ) -> bool:
        """Send the response; False when the connection must close."""
        path = req.target.decode()
        headers = {k.decode().lower(): v.decode() for k, v in req.headers}
        served = self.files.get(path)
        hit = Hit(path, headers.get("range"), headers.get("if-range"), 404)
        self.log.append(hit)
        if served is None or served.status != 200:
            hit.status = 404 if served is None else served.status
            await _send_simple(conn, stream, hit.status, b"no\n")
            return True
        if served.redirect is not None:
            hit.status = 302
            await _send_simple(conn, stream, 302, b"", [("location", served.redirect)])
            return True
        start, end, status = self._span(served, headers)
        hit.status = status
        size = len(served.data)
        out = [("content-type", served.content_type), ("content-length", str(end - start))]
        out += [("accept-ranges", "bytes")] if not served.ignore_ranges else []
        out += [("etag", served.etag)] if served.etag else []
        out += [("last-modified", served.last_modified)] if served.last_modified else []
        if status == 206:
            out.append(("content-range", f"bytes {start}-{end - 1}/{size}"))
        if status == 416:
            out = [("content-range", f"bytes */{size}"), ("content-length", "0")]
        await _send(conn, stream, h11.Response(status_code=status, headers=out))
        if status == 416:
            await _send(conn, stream, h11.EndOfMessage())
            return True
        return await self._body(conn, stream, served, hit, start, end)

    def _span(self, served: Served, headers: dict[str, str]) -> tuple[int, int, int]:
        size = len(served.data)
        wanted = headers.get("range")
        if wanted is None or served.ignore_ranges:
            return 0, size, 200
        if_range = headers.get("if-range")
        if if_range is not None and if_range not in (served.etag, served.last_modified):
            return 0, size, 200
        try:
            ranges = parse_ranges(wanted, size)
        except Unsatisfiable:
            return 0, 0, 416
        if ranges is None:
            return 0, size, 200
        return ranges[0].start, ranges[0].end, 206

    async def _body(
        self,
        conn: h11.Connection,
        stream: trio.SocketStream,
        served: Served,
        hit: Hit,
        start: int,
        end: int,
    ) -> bool:
        view = memoryview(served.data)[start:end]
        drop = served.drop_after if served.drops_left > 0 else None
        if drop is not None:
            served.drops_left -= 1
        for at in range(0, len(view), PIECE):
            held = served.hold_after is not None and start + at >= served.hold_after
            if held and not served.release.is_set():
                await trio.to_thread.run_sync(served.release.wait, abandon_on_cancel=True)
            piece = view[at : at + PIECE]
            if drop is not None and hit.sent + len(piece) > drop:
                piece = piece[: drop - hit.sent]
                await stream.send_all(conn.send(h11.Data(data=bytes(piece))) or b"")
                hit.sent += len(piece)
                if served.on_drop is not None:
                    served.on_drop(served)
                return False  # the connection closes mid-body
            await stream.send_all(conn.send(h11.Data(data=bytes(piece))) or b"")
            hit.sent += len(piece)
            if served.rate:
                await trio.sleep(len(piece) / served.rate)  # the throttle itself
        await _send(conn, stream, h11.EndOfMessage())
        return True


async def _next_event(conn: h11.Connection, stream: trio.SocketStream) -> object:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            conn.receive_data(data)
            continue
        return event


async def _send(conn: h11.Connection, stream: trio.SocketStream, event: object) -> None:
    await stream.send_all(conn.send(event) or b"")  # type: ignore[arg-type]


async def _send_simple(
    conn: h11.Connection,
    stream: trio.SocketStream,
    status: int,
    body: bytes,
    extra: list[tuple[str, str]] | None = None,
) -> None:
    headers = [("content-length", str(len(body))), *(extra or [])]
    await _send(conn, stream, h11.Response(status_code=status, headers=headers))
    await _send(conn, stream, h11.Data(data=body))
    await _send(conn, stream, h11.EndOfMessage())


def main() -> None:
    origin = Origin()
    with open(sys.argv[1], "rb") as f:
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    origin.files["/file"] = Served(data)  # type: ignore[arg-type]
    origin.start()
    print(origin.port, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
