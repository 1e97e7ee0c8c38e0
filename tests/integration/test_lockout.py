"""Strangers flooding the listener lock out neither the node's own CLI nor a peer."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.integration.nodes import Daemon, wait_for

SLOTS = 8


def idle_sockets(port: int, count: int) -> list[socket.socket]:
    """``count`` TCP connections that never say a word."""
    return [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]


def refused_busy(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /hearthfile/1 HTTP/1.1\r\nHost: x\r\n\r\n")
        return sock.recv(64).startswith(b"HTTP/1.1 503")


def test_the_cli_reaches_its_node_while_strangers_hold_every_slot(tmp_path: Path) -> None:
    node = Daemon(tmp_path / "a").start(
        config=f"limits:\n  max_unauthenticated: {SLOTS}\n  handshake_timeout_s: 120\n"
    )
    flood = idle_sockets(node.port, SLOTS)
    try:
        # The flood holds every handshake slot of the TCP listener ...
        assert wait_for(lambda: refused_busy(node.port), what="the listener to refuse")
        # ... yet the CLI gets through its control socket, several times over.
        for _ in range(3):
            assert node.cli("status").returncode == 0
        assert refused_busy(node.port)  # the flood was still in force
    finally:
        for sock in flood:
            sock.close()
        node.stop()


def test_a_peer_reconnects_through_a_flood_of_stale_handshakes(tmp_path: Path) -> None:
    """Idle sockets that fill every slot give way, once stale (after a tenth of the
    handshake timeout: 6 s here), to a peer's handshake, long before they time out."""
    a = Daemon(tmp_path / "a").start(
        config=f"limits:\n  max_unauthenticated: {SLOTS}\n  handshake_timeout_s: 60\n"
    )
    flood = idle_sockets(a.port, SLOTS)
    try:
        b = Daemon(tmp_path / "b").start(a)
        assert refused_busy(a.port)
        wait_for(lambda: b.connected_to(a), 45, "b to connect to a through the flood")
        b.stop()
    finally:
        for sock in flood:
            sock.close()
        a.stop()
