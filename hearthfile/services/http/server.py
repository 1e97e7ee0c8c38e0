"""The gateway's listener: hypercorn's trio worker serving the ASGI ``Gateway``.

Why hypercorn: it runs on trio natively (``hypercorn.trio.serve``), it is h11
underneath (the sans-IO HTTP/1.1 parser this project already models its cores
on), and it brings what a hand-made h11 shell would have to grow: keep-alive and
pipelining, ``Expect: 100-continue`` (curl sends it before large uploads), HEAD
framing, idle and header timeouts, graceful shutdown. Its per-request cost and
per-MB cost are measured in BENCHMARKS.md (scripts/bench_http.py).

The socket is bound here, before hypercorn starts, so that a port that cannot be
bound is reported to the caller as one ``OSError`` (DESIGN.md section 10: the
default port taken means no HTTP and one log line; an explicit one is an error).
"""

from __future__ import annotations

import logging
import socket
from typing import Final

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve, tcp_server

from hearthfile.config import HttpConfig
from hearthfile.services.http import HttpListenError
from hearthfile.services.http.app import Gateway

log = logging.getLogger(__name__)

#: Seconds an idle keep-alive connection, or one still sending its request
#: headers (slowloris), is kept: the timer runs from connect until the headers
#: are complete.
KEEP_ALIVE_S: Final = 5
#: Request line plus headers: h11 refuses more (431/400) before any route runs.
MAX_HEADER_BYTES: Final = 16 * 1024
BACKLOG: Final = 512
#: Bytes asked of the socket per read. hypercorn reads 64 KiB at a time, a module
#: constant with no setting; an upload then costs ~16,000 trips through h11 and
#: the ASGI queue per GiB. With 1 MiB reads, the daemon spent 0.41-0.59 CPU-s on a
#: 256 MiB PUT, against 0.64-0.86 with 64 KiB (three runs each, loaded machine).
RECEIVE_BYTES: Final = 1024 * 1024


def open_http_socket(config: HttpConfig) -> socket.socket | None:
    """The gateway's listening socket, or None when it is off or when the
    default port is taken (logged once); an explicit address that cannot be
    bound raises ``HttpListenError``."""
    if config.listen is None:
        return None
    try:
        return bind_socket(config.listen.host, config.listen.port)
    except OSError as exc:
        if config.explicit:
            raise HttpListenError(
                f"cannot listen for HTTP on {config.listen}: {exc.strerror or exc}"
            ) from None
        log.warning("http_off reason=port_taken listen=%s", config.listen)
        return None


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free port); OSError if not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def hypercorn_config(sock: socket.socket) -> HypercornConfig:
    tcp_server.MAX_RECV = RECEIVE_BYTES
    config = HypercornConfig()
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns the descriptor from here
    config.keep_alive_timeout = KEEP_ALIVE_S
    config.h11_max_incomplete_size = MAX_HEADER_BYTES
    config.backlog = BACKLOG
    config.include_server_header = False
    config.accesslog = None
    config.errorlog = logging.getLogger("hearthfile.http.server")
    return config


async def serve_http(
    gateway: Gateway,
    sock: socket.socket,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``gateway`` on the bound ``sock`` until cancelled; ``started(host:port)``."""
    host, port = sock.getsockname()[:2]
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    config = hypercorn_config(sock)

    async def started(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await serve(gateway, config, task_status=task_status)  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        await nursery.start(started)
        log.info("http_started listen=%s", address)
        task_status.started(address)
