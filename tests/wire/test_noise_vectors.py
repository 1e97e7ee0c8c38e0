"""Noise test vectors (cacophony, 25519/AESGCM/SHA256, both roles) and the worked example
of docs/PROTOCOL.md, recomputed from its fixed keys."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hearthfile.bus.handshake import Handshake
from hearthfile.bus.noise import PATTERNS, CipherState, HandshakeState, KeyPair
from hearthfile.identity import NodeKey

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


# The worked example of docs/PROTOCOL.md (part A, section 7), recomputed from its
# fixed keys: the document and the code must not drift apart.
EXAMPLE = {
    "msg1": "3c5c6ce2dd99e10d2c3de05d773aa15e3e6d971ed4e41389c93b4bbdda177212",
    "msg2": (
        "db48257e1237976a74ad8cfedca00213408fe89ac6251f1b930245f242b5c31a"
        "9983ad8d79e14b3e2773c254c2c06634a5b6d237fdf6064fd1b2600d0c38ba81"
        "04f8326273a2dd9eb0c4ed9ec8021de3"
        "17166215f4ec2696995841fbf453cb6d99181135be43e7dc23b108521e937a80"
        "07edc2292fefc9798ecd364beec23bf92a38e9ce7ae43a1ecc0aa83dfdc2f295"
        "b3f6fd20b5484c49122e114713f1e19d832431723efee3f22dcc97b4941495bc"
        "409f03c4ec615500feacc0f090616fff1422f73f21"
    ),
    "msg3": (
        "353a2d3326080f7b28fa85c602fcc23c8fe9a552735abf00abe88fd345902817"
        "7a7d4fbffc6f146e47771ceb07443940"
        "ebfef136f3776d31f0a5513912c1e9216cd7f85c79ffcbe0024877d492fea8b8"
        "52045d20ca31790c470a6590b841b223bbcde26b85c98a15e25e1f6e6e453974"
        "57d0323aa670eddbf28bcc481574fc6c54946915a98ca537f0e5b5011e12666d"
        "e69efe4b5c3c10e6a2087567955894f351ca8ab7d2"
    ),
    "hash": "3351e677a14e9118b9f77a1cc6a46786d911d51bd0fbf8457f3de9c75decddbe",
    "hello": "001528e04c75b804f6de0dbeb1ac66de3200b6165c56f6",
    "hi A": "0014a9a49d5b70445e4a0a536502e241bb039031850a",
    "empty": "0010eff807e4e84f464d6704a63c7129c910",
}


def _scripted(*keys: str) -> Callable[[int], bytes]:
    queue = [bytes.fromhex(key) for key in keys]
    return lambda size: queue.pop(0)


def test_worked_example_of_the_protocol_document() -> None:
    a_key = NodeKey.from_private_bytes(bytes.fromhex("a0" * 32))
    b_key = NodeKey.from_private_bytes(bytes.fromhex("b0" * 32))
    assert str(a_key.node_id) == "hfwuz5rlm7z6654c2idqntgto4hrjucl6wcrle47s27ubag2gtqlbq"
    assert str(b_key.node_id) == "hfobp3vqa7kumyth2dppcc4qbfllu2wvf76ag6gqz267lipwphdlkq"
    a = Handshake(
        initiator=True,
        node_key=a_key,
        expected_peer=b_key.node_id,
        rng=_scripted("a1" * 32, "a2" * 32),
    )
    b = Handshake(initiator=False, node_key=b_key, rng=_scripted("b1" * 32, "b2" * 32))
    for name, writer, reader in (("msg1", a, b), ("msg2", b, a), ("msg3", a, b)):
        message = writer.write_message()
        assert message.hex() == EXAMPLE[name], name
        reader.read_message(message)
    assert a.peer == b_key.node_id and b.peer == a_key.node_id
    assert a.handshake_hash.hex() == b.handshake_hash.hex() == EXAMPLE["hash"]
    to_b, to_a = a.session(1 << 20), b.session(1 << 20)
    assert to_b.encrypt_frame(b"hello").hex() == EXAMPLE["hello"]
    assert to_a.encrypt_frame(b"hi A").hex() == EXAMPLE["hi A"]
    assert to_b.encrypt_frame(b"").hex() == EXAMPLE["empty"]
    # And the other way: each side reads the document's bytes.
    assert to_a.decrypt_frame(bytes.fromhex(EXAMPLE["hello"])) == b"hello"
    assert to_b.decrypt_frame(bytes.fromhex(EXAMPLE["hi A"])) == b"hi A"
    assert to_a.decrypt_frame(bytes.fromhex(EXAMPLE["empty"])) == b""
