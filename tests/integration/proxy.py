"""A TCP proxy on loopback that injects faults: throttling (and nothing else yet).

Run as ``python -m tests.integration.proxy TARGET_PORT RATE_BYTES_PER_S PORT_FILE``:
it listens on 127.0.0.1 port 0, writes the port it got to PORT_FILE, and
forwards every connection to 127.0.0.1:TARGET_PORT, pacing the bytes coming
back from the target to RATE bytes per second in all (0: no limit): one slow
uplink shared by every connection through it.
Tests start it as a process of its own so its pacing never shares a thread
with what it measures, and stop it with a signal.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time

CHUNK = 16 * 1024


class Link:
    """One paced link shared by every connection through the proxy (an uplink)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.free_at = time.monotonic()  # when the link can take the next byte
        self.lock = threading.Lock()

    def take(self, nbytes: int) -> None:
        """Strict pacing, no burst credit: an idle link does not save up."""
        with self.lock:
            self.free_at = max(self.free_at, time.monotonic()) + nbytes / self.rate
            wait = self.free_at - time.monotonic()
        time.sleep(max(0.0, wait))  # the injected fault: a slow link


def pump(src: socket.socket, dst: socket.socket, link: Link | None) -> None:
    try:
        while data := src.recv(CHUNK):
            if link is not None:
                link.take(len(data))
            dst.sendall(data)
    except OSError:
        return  # either side went away: close both (below)
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def serve(target_port: int, rate: float, port_file: str) -> None:
    link = Link(rate) if rate else None
    listener = socket.create_server(("127.0.0.1", 0))
    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(listener.getsockname()[1]))
    os.replace(tmp, port_file)
    while True:
        client, _ = listener.accept()
        upstream = socket.create_connection(("127.0.0.1", target_port))
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=pump, args=(client, upstream, None), daemon=True).start()
        threading.Thread(target=pump, args=(upstream, client, link), daemon=True).start()


if __name__ == "__main__":
    serve(int(sys.argv[1]), float(sys.argv[2]), sys.argv[3])
