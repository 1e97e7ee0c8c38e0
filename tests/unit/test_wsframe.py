"""Websocket frames built in place (bus/wsframe.py) are what wsproto reads as one binary
message, masked from a client and plain from a server, at every length encoding."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, Request

from hearthfile.bus import wsframe
from hearthfile.bus.handshake import SecureSession
from hearthfile.bus.noise import CipherState


def connected() -> tuple[WSConnection, WSConnection]:
    client, server = WSConnection(ConnectionType.CLIENT), WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="localhost", target="/")))
    assert isinstance(next(server.events()), Request)
    client.receive_data(server.send(AcceptConnection()))
    assert isinstance(next(client.events()), AcceptConnection)
    return client, server


def received(peer: WSConnection, wire: bytes) -> bytes:
    peer.receive_data(wire)
    parts = list(peer.events())
    assert all(isinstance(p, BytesMessage) for p in parts), parts
    assert parts and parts[-1].message_finished  # type: ignore[attr-defined]
    return b"".join(p.data for p in parts)  # type: ignore[attr-defined]


LENGTHS = st.one_of(st.integers(0, 300), st.sampled_from([125, 126, 65535, 65536, 327_788]))


@settings(max_examples=40, deadline=None)
@given(length=LENGTHS)
def test_frames_built_in_place_are_read_by_wsproto(length: int) -> None:
    client, server = connected()
    payload = os.urandom(length)
    for sender_is_client, reader in ((True, server), (False, client)):
        buffer = bytearray(wsframe.HEADROOM) + payload
        key = os.urandom(4) if sender_is_client else None
        frame = bytes(wsframe.frame_in_place(buffer, key))
        assert frame[0] == 0x82 and bool(frame[1] & 0x80) == sender_is_client
        assert received(reader, frame) == payload


def test_a_server_frame_is_what_wsproto_sends() -> None:
    _, server = connected()
    payload = os.urandom(70_000)
    expected = server.send(BytesMessage(data=payload))
    assert bytes(wsframe.frame_in_place(bytearray(wsframe.HEADROOM) + payload, None)) == expected


def test_an_encrypted_frame_with_headroom_decrypts_after_the_header() -> None:
    key = bytes(range(32))
    sender = SecureSession(CipherState(key), CipherState(key), 1 << 20)
    receiver = SecureSession(CipherState(key), CipherState(key), 1 << 20)
    frame = os.urandom(262_200)
    buffer = sender.encrypt_frame(frame, headroom=wsframe.HEADROOM)
    _client, server = connected()
    wire = bytes(wsframe.frame_in_place(buffer, os.urandom(4)))
    assert receiver.decrypt_frame(received(server, wire)) == frame
