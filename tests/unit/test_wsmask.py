"""The numpy websocket masker: byte for byte what RFC 6455 (and wsproto) computes, across
payloads split anywhere, and wsproto connections using it still talk to each other."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, Request

from hearthfile.bus import wsmask


def rfc_mask(data: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


@settings(max_examples=60, deadline=None)
@given(
    key=st.binary(min_size=4, max_size=4),
    size=st.integers(0, 3 * wsmask.BULK_BYTES),
    cuts=st.lists(st.integers(0, 3 * wsmask.BULK_BYTES), max_size=4),
)
def test_masking_in_parts_matches_the_rfc(key: bytes, size: int, cuts: list[int]) -> None:
    data = os.urandom(size)
    bounds = sorted({0, size, *(c for c in cuts if c < size)})
    masker = wsmask.Masker(key)
    out = b"".join(bytes(masker.process(data[a:b])) for a, b in itertools.pairwise(bounds))
    assert out == rfc_mask(data, key)


def test_bulk_messages_cross_a_wsproto_connection_both_ways() -> None:
    wsmask.install()
    client, server = WSConnection(ConnectionType.CLIENT), WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="localhost", target="/")))
    assert isinstance(next(server.events()), Request)
    client.receive_data(server.send(AcceptConnection()))
    assert isinstance(next(client.events()), AcceptConnection)
    for size in (10, wsmask.BULK_BYTES + 3, 256 * 1024):
        payload = os.urandom(size)
        wire = client.send(BytesMessage(data=payload))  # masked by the client
        assert payload not in wire
        for start in range(0, len(wire), 50_000):  # arriving in pieces
            server.receive_data(wire[start : start + 50_000])
        got = b"".join(bytes(e.data) for e in server.events() if isinstance(e, BytesMessage))
        assert got == payload
        client.receive_data(server.send(BytesMessage(data=payload)))
        back = b"".join(bytes(e.data) for e in client.events() if isinstance(e, BytesMessage))
        assert back == payload


def test_importing_the_bus_installs_nothing() -> None:
    """The masker is swapped only by an explicit install at start-up (node.serve_node)."""
    code = (
        "import hearthfile.bus.client, hearthfile.bus.pool, hearthfile.node\n"
        "from hearthfile.bus import wsmask\n"
        "assert not wsmask.installed()\n"
        "wsmask.install()\n"
        "assert wsmask.installed()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
