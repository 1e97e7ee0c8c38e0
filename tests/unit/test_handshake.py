"""The identity-binding handshake and the encrypted framing, back to back (pure)."""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Callable

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hearthfile.bus.handshake import (
    IDENTITY_PAYLOAD_BYTES,
    SIGNATURE_DOMAIN,
    Handshake,
    HandshakeError,
    SecureSession,
    encrypted_frame_bytes,
    identity_payload,
    verify_identity_payload,
)
from hearthfile.bus.noise import MAX_MESSAGE_BYTES, MAX_PLAINTEXT_BYTES, KeyPair
from hearthfile.errors import LocalProtocolError, RemoteProtocolError
from hearthfile.identity import NodeKey

MAX_FRAME = 320 * 1024
SERVER_KEY = NodeKey.from_private_bytes(bytes(range(32)))
CLIENT_KEY = NodeKey.from_private_bytes(bytes(range(32, 64)))


def rng_bytes(seed: int) -> Callable[[int], bytes]:
    """A reproducible stand-in for os.urandom."""
    return random.Random(seed).randbytes


def pair(
    expected: NodeKey | None = None, seed: int = 1
) -> tuple[Handshake, Handshake, list[bytes]]:
    """Run a full handshake, returning (initiator, responder, the three messages)."""
    initiator = Handshake(
        initiator=True,
        node_key=CLIENT_KEY,
        expected_peer=None if expected is None else expected.node_id,
        rng=rng_bytes(seed),
    )
    responder = Handshake(initiator=False, node_key=SERVER_KEY, rng=rng_bytes(seed + 1000))
    messages = exchange(initiator, responder)
    return initiator, responder, messages


def exchange(initiator: Handshake, responder: Handshake) -> list[bytes]:
    messages = []
    writer, reader = initiator, responder
    while not (initiator.complete and responder.complete):
        assert writer.wants_write and not reader.wants_write
        message = writer.write_message()
        messages.append(message)
        reader.read_message(message)
        writer, reader = reader, writer
    return messages


def sessions(initiator: Handshake, responder: Handshake) -> tuple[SecureSession, SecureSession]:
    return initiator.session(MAX_FRAME), responder.session(MAX_FRAME)


def test_back_to_back_handshake_proves_both_identities() -> None:
    initiator, responder, messages = pair(expected=SERVER_KEY)
    assert initiator.peer == SERVER_KEY.node_id
    assert responder.peer == CLIENT_KEY.node_id
    assert initiator.handshake_hash == responder.handshake_hash
    assert [len(m) for m in messages] == [32, 32 + 48 + IDENTITY_PAYLOAD_BYTES + 16, 48 + 117]


def test_handshake_is_reproducible_from_the_rng() -> None:
    assert pair(seed=7)[2] == pair(seed=7)[2]
    assert pair(seed=7)[2] != pair(seed=8)[2]


def test_sessions_talk_both_ways() -> None:
    client, server = sessions(*pair()[:2])
    assert server.decrypt_frame(client.encrypt_frame(b"ping")) == b"ping"
    assert client.decrypt_frame(server.encrypt_frame(b"pong")) == b"pong"
    assert server.decrypt_frame(client.encrypt_frame(b"")) == b""


def test_a_256_kib_frame_is_one_message_of_length_prefixed_pieces() -> None:
    client, server = sessions(*pair()[:2])
    frame = os.urandom(256 * 1024)
    wire = server.encrypt_frame(memoryview(frame))
    assert len(wire) == encrypted_frame_bytes(len(frame))
    lengths = []
    offset = 0
    while offset < len(wire):
        (length,) = struct.unpack_from(">H", wire, offset)
        assert length <= MAX_MESSAGE_BYTES
        lengths.append(length)
        offset += 2 + length
    assert offset == len(wire)
    assert lengths == [MAX_MESSAGE_BYTES] * 4 + [len(frame) - 4 * MAX_PLAINTEXT_BYTES + 16]
    assert client.decrypt_frame(wire) == frame


@given(st.binary(max_size=3 * MAX_PLAINTEXT_BYTES + 10))
@settings(max_examples=30)
def test_frames_round_trip(frame: bytes) -> None:
    client, server = sessions(*pair()[:2])
    assert server.decrypt_frame(client.encrypt_frame(frame)) == frame
    assert server.decrypt_frame(client.encrypt_frame(bytearray(frame))) == frame


def test_oversize_frames_are_refused_both_ways() -> None:
    initiator, responder, _ = pair()
    client, server = initiator.session(1000), responder.session(100_000)
    with pytest.raises(LocalProtocolError):
        client.encrypt_frame(bytes(1001))
    with pytest.raises(RemoteProtocolError, match="exceeds 1000"):
        client.decrypt_frame(server.encrypt_frame(bytes(1001)))


def test_tampered_frame_is_rejected() -> None:
    client, server = sessions(*pair()[:2])
    wire = bytearray(client.encrypt_frame(b"important"))
    wire[5] ^= 1
    with pytest.raises(RemoteProtocolError, match="failed authentication"):
        server.decrypt_frame(bytes(wire))


def test_replayed_frame_is_rejected() -> None:
    client, server = sessions(*pair()[:2])
    wire = client.encrypt_frame(b"once")
    assert server.decrypt_frame(wire) == b"once"
    with pytest.raises(RemoteProtocolError):
        server.decrypt_frame(wire)


def test_reordered_frames_are_rejected() -> None:
    client, server = sessions(*pair()[:2])
    first, second = client.encrypt_frame(b"first"), client.encrypt_frame(b"second")
    with pytest.raises(RemoteProtocolError):
        server.decrypt_frame(second)
    assert server.decrypt_frame(first) == b"first"  # it failed for its position alone


def test_dropped_frame_is_a_gap() -> None:
    client, server = sessions(*pair()[:2])
    client.encrypt_frame(b"lost")
    with pytest.raises(RemoteProtocolError):
        server.decrypt_frame(client.encrypt_frame(b"after"))


def _split_pieces(wire: bytes) -> list[bytes]:
    pieces, offset = [], 0
    while offset < len(wire):
        (length,) = struct.unpack_from(">H", wire, offset)
        pieces.append(wire[offset : offset + 2 + length])
        offset += 2 + length
    return pieces


def test_a_frame_cut_in_two_messages_is_rejected() -> None:
    client, server = sessions(*pair()[:2])
    pieces = _split_pieces(client.encrypt_frame(bytes(2 * MAX_PLAINTEXT_BYTES)))
    assert len(pieces) == 2
    with pytest.raises(RemoteProtocolError):
        server.decrypt_frame(pieces[0])


def test_two_frames_glued_into_one_message_are_rejected() -> None:
    client, server = sessions(*pair()[:2])
    glued = client.encrypt_frame(b"one") + client.encrypt_frame(b"two")
    with pytest.raises(RemoteProtocolError):
        server.decrypt_frame(glued)


@pytest.mark.parametrize(
    "wire", [b"", b"\x00", b"\x00\x05abcde", b"\xff\xff" + bytes(10), b"\x00\x10" + bytes(15)]
)
def test_malformed_framing_is_rejected(wire: bytes) -> None:
    _, server = sessions(*pair()[:2])
    with pytest.raises(RemoteProtocolError):
        server.decrypt_frame(wire)


@given(st.binary(max_size=300))
@settings(max_examples=200)
def test_garbage_into_decrypt_raises_only_remote_protocol_error(wire: bytes) -> None:
    _, server = sessions(*pair()[:2])
    with pytest.raises(RemoteProtocolError):
        server.decrypt_frame(wire)


@given(st.binary(max_size=300))
@settings(max_examples=200)
def test_garbage_handshake_messages_raise_only_handshake_error(message: bytes) -> None:
    initiator = Handshake(initiator=True, node_key=CLIENT_KEY)
    initiator.write_message()
    with pytest.raises(HandshakeError):
        initiator.read_message(message)  # as message 2
    responder = Handshake(initiator=False, node_key=SERVER_KEY)
    if len(message) != 32:
        with pytest.raises(HandshakeError):
            responder.read_message(message)  # as message 1
        return
    responder.read_message(message)  # any 32 bytes are an ephemeral key
    responder.write_message()
    with pytest.raises(HandshakeError):
        responder.read_message(message)  # as message 3


def test_message_one_must_carry_no_payload() -> None:
    responder = Handshake(initiator=False, node_key=SERVER_KEY)
    with pytest.raises(HandshakeError, match="exactly the 32-byte ephemeral key"):
        responder.read_message(os.urandom(32) + b"x")


def test_dialer_rejects_an_unexpected_node_id() -> None:
    initiator = Handshake(
        initiator=True, node_key=CLIENT_KEY, expected_peer=NodeKey.generate().node_id
    )
    responder = Handshake(initiator=False, node_key=SERVER_KEY)
    responder.read_message(initiator.write_message())
    with pytest.raises(HandshakeError, match="unexpected node id") as caught:
        initiator.read_message(responder.write_message())
    assert str(SERVER_KEY.node_id) in str(caught.value)
    assert caught.value.reason == "unexpected node id"
    assert not initiator.complete
    with pytest.raises(LocalProtocolError):
        initiator.peer  # noqa: B018
    with pytest.raises(LocalProtocolError):
        initiator.write_message()


class ForgingHandshake(Handshake):
    """A responder whose payload signs some other static key (a stolen signature)."""

    def __init__(self, payload: bytes) -> None:
        super().__init__(initiator=False, node_key=SERVER_KEY)
        self._payload = payload


def test_bad_identity_signature_is_rejected() -> None:
    stolen = identity_payload(SERVER_KEY, KeyPair.generate().public)
    initiator = Handshake(initiator=True, node_key=CLIENT_KEY)
    forger = ForgingHandshake(stolen)
    forger.read_message(initiator.write_message())
    with pytest.raises(HandshakeError, match="signature does not match"):
        initiator.read_message(forger.write_message())


def test_signature_by_another_key_is_rejected() -> None:
    static = KeyPair.generate().public
    mallory = NodeKey.generate()
    forged = msgpack.packb(
        [SERVER_KEY.public_bytes, mallory.sign(SIGNATURE_DOMAIN + static)], use_bin_type=True
    )
    with pytest.raises(HandshakeError, match="signature does not match"):
        verify_identity_payload(forged, static)


def test_signature_without_the_domain_prefix_is_rejected() -> None:
    static = KeyPair.generate().public
    forged = msgpack.packb([SERVER_KEY.public_bytes, SERVER_KEY.sign(static)], use_bin_type=True)
    with pytest.raises(HandshakeError, match="signature does not match"):
        verify_identity_payload(forged, static)


@pytest.mark.parametrize(
    "payload",
    [
        msgpack.packb([b"k" * 32, b"s" * 64, 1], use_bin_type=True),
        msgpack.packb({"k": b"k" * 32, "s": b"s" * 64}, use_bin_type=True),
        msgpack.packb([b"k" * 31, b"s" * 65], use_bin_type=True),
        msgpack.packb(["k" * 32, b"s" * 64], use_bin_type=True),
        b"\x92\xc5\x00\x20" + b"k" * 32 + b"\xc4\x40" + b"s" * 63,  # bin16: not canonical
        bytes(IDENTITY_PAYLOAD_BYTES),
    ],
)
def test_malformed_identity_payloads_are_rejected(payload: bytes) -> None:
    with pytest.raises(HandshakeError):
        verify_identity_payload(payload, bytes(32))


def test_identity_payload_is_the_canonical_fixed_array() -> None:
    static = bytes(range(32))
    payload = identity_payload(SERVER_KEY, static)
    assert len(payload) == IDENTITY_PAYLOAD_BYTES
    assert payload[:3] == b"\x92\xc4\x20" and payload[35:37] == b"\xc4\x40"
    assert payload[3:35] == SERVER_KEY.public_bytes
    assert SERVER_KEY.node_id.verify(SIGNATURE_DOMAIN + static, payload[37:])
    assert verify_identity_payload(payload, static) == SERVER_KEY.node_id


def test_replayed_message_one_in_place_of_message_three_fails() -> None:
    initiator = Handshake(initiator=True, node_key=CLIENT_KEY)
    responder = Handshake(initiator=False, node_key=SERVER_KEY)
    first = initiator.write_message()
    responder.read_message(first)
    responder.write_message()
    with pytest.raises(HandshakeError, match="message 3"):
        responder.read_message(first)


def test_recorded_handshake_replayed_to_a_new_responder_fails() -> None:
    """An eavesdropper replays a client's messages 1 and 3: the new responder's
    fresh ephemeral key makes message 3 undecryptable."""
    _, _, recorded = pair()
    fresh = Handshake(initiator=False, node_key=SERVER_KEY)
    fresh.read_message(recorded[0])
    fresh.write_message()
    with pytest.raises(HandshakeError, match="does not decrypt"):
        fresh.read_message(recorded[2])


def test_replayed_message_two_to_a_new_initiator_fails() -> None:
    _, _, recorded = pair()
    fresh = Handshake(initiator=True, node_key=CLIENT_KEY)
    fresh.write_message()
    with pytest.raises(HandshakeError):
        fresh.read_message(recorded[1])


def test_out_of_turn_calls() -> None:
    initiator = Handshake(initiator=True, node_key=CLIENT_KEY)
    with pytest.raises(HandshakeError, match="unexpected"):
        initiator.read_message(bytes(32))
    responder = Handshake(initiator=False, node_key=SERVER_KEY)
    with pytest.raises(LocalProtocolError):
        responder.write_message()
    with pytest.raises(LocalProtocolError):
        responder.session(MAX_FRAME)


def test_handshake_after_completion_is_unexpected() -> None:
    _, responder, messages = pair()
    with pytest.raises(HandshakeError, match="unexpected"):
        responder.read_message(messages[2])
