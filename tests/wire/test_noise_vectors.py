"""The published Noise test vectors (cacophony) for 25519/AESGCM/SHA256, both roles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hearthfile.bus.noise import PATTERNS, CipherState, HandshakeState, KeyPair

VECTORS_PATH = Path(__file__).with_name("noise-25519-aesgcm-sha256.json")
VECTORS: list[dict[str, Any]] = json.loads(VECTORS_PATH.read_text())["vectors"]


def _pattern(vector: dict[str, Any]) -> str:
    return str(vector["protocol_name"]).split("_")[1]


def _key(vector: dict[str, Any], name: str) -> KeyPair | None:
    return KeyPair.from_private_bytes(bytes.fromhex(vector[name])) if name in vector else None


def _side(vector: dict[str, Any], initiator: bool) -> HandshakeState:
    prefix = "init" if initiator else "resp"
    return HandshakeState(
        _pattern(vector),
        initiator=initiator,
        prologue=bytes.fromhex(vector[f"{prefix}_prologue"]),
        static=_key(vector, f"{prefix}_static"),
        ephemeral=_key(vector, f"{prefix}_ephemeral"),
    )


def test_the_file_covers_xx() -> None:
    patterns = {_pattern(vector) for vector in VECTORS}
    assert "XX" in patterns
    assert patterns <= set(PATTERNS)


@pytest.mark.parametrize("vector", VECTORS, ids=[v["protocol_name"] for v in VECTORS])
def test_vector(vector: dict[str, Any]) -> None:
    initiator, responder = _side(vector, True), _side(vector, False)
    messages = vector["messages"]
    handshake_length = len(PATTERNS[_pattern(vector)])
    for index, message in enumerate(messages[:handshake_length]):
        writer, reader = (initiator, responder) if index % 2 == 0 else (responder, initiator)
        payload = bytes.fromhex(message["payload"])
        ciphertext = writer.write_message(payload)
        assert ciphertext.hex() == message["ciphertext"], f"handshake message {index}"
        assert reader.read_message(ciphertext) == payload
    assert initiator.complete and responder.complete
    assert initiator.handshake_hash.hex() == vector["handshake_hash"]
    assert responder.handshake_hash == initiator.handshake_hash
    _check_transport(initiator.split(), responder.split(), messages, handshake_length)


def _check_transport(
    initiator: tuple[CipherState, CipherState],
    responder: tuple[CipherState, CipherState],
    messages: list[dict[str, str]],
    first: int,
) -> None:
    # cacophony keeps alternating senders after the handshake.
    for index in range(first, len(messages)):
        sender, receiver = (initiator, responder) if index % 2 == 0 else (responder, initiator)
        send, receive = sender[0], receiver[1]
        payload = bytes.fromhex(messages[index]["payload"])
        ciphertext = send.encrypt_with_ad(b"", payload)
        assert ciphertext.hex() == messages[index]["ciphertext"], f"transport message {index}"
        assert receive.decrypt_with_ad(b"", ciphertext) == payload
