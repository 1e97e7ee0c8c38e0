"""A TCP proxy on loopback that injects faults: throttling (and nothing else yet).

Run as ``python -m tests.integration.proxy TARGET_PORT RATE_BYTES_PER_S PORT_FILE``:
it listens on 127.0.0.1 port 0, writes the port it got to PORT_FILE, and
forwards every connection to 127.0.0.1:TARGET_PORT, pacing the bytes coming
back from the target to RATE bytes per second per connection (0: no limit).
Tests start it as a process of its own so its pacing never shares a thread
with what it measures, and stop it with a signal.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

CHUNK = 16 * 1024


def pump(src: socket.socket, dst: socket.socket, rate: float) -> None:
    free_at = time.monotonic()  # when the link can take the next byte
    try:
        while data := src.recv(CHUNK):
            dst.sendall(data)
            if rate:
                # Strict pacing, no burst credit: an idle link does not save up.
                free_at = max(free_at, time.monotonic()) + len(data) / rate
                time.sleep(max(0.0, free_at - time.monotonic()))  # the injected slow link
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve(target_port: int, rate: float, port_file: str) -> None:
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
        threading.Thread(target=pump, args=(client, upstream, 0), daemon=True).start()
        threading.Thread(target=pump, args=(upstream, client, rate), daemon=True).start()


if __name__ == "__main__":
    serve(int(sys.argv[1]), float(sys.argv[2]), sys.argv[3])
