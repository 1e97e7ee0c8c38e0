"""Identity binding over Noise XX, and the encrypted framing after it (pure, sans-IO).

Owns who the peer is and how one bus frame becomes bytes on the wire. The
trio shells (bus/client.py, bus/server.py) move the bytes this module
produces; docs/PROTOCOL.md (part A) is the byte-level description.

Handshake
---------
``Noise_XX_25519_AESGCM_SHA256`` with prologue ``b"hearthfile/1"``. The Noise
static key is a fresh X25519 key per connection; the long-lived identity is
the node's Ed25519 key, bound to the static key the way libp2p's noise
handshake does it. Each side's handshake payload is a fixed-order msgpack
array of two binaries::

    [ node Ed25519 public key (32 bytes),
      Ed25519 signature by that key over SIGNATURE_DOMAIN + sender's Noise static public key ]

sent by the responder in message 2 and by the initiator in message 3;
message 1 carries an empty payload. The payload must be exactly the canonical
encoding (101 bytes: ``92 c4 20 <key> c4 40 <signature>``), so there is one
byte string to sign and check. Each side verifies the signature against the
static key Noise just authenticated and derives the peer's ``NodeId`` from the
Ed25519 key; a dialer that expected a particular NodeId rejects any other.
The domain prefix keeps the signature from being replayed as any other
hearthfile signature (gossip records, manifests).

Framing after the handshake
---------------------------
One bus frame travels as one websocket message holding a sequence of Noise
transport messages, each preceded by its 2-byte big-endian length. A frame is
cut into pieces of at most 65519 plaintext bytes (65535 with the tag); an
empty frame is one empty piece. The associated data of each piece is one byte,
``0x01`` on the last piece of the frame and ``0x00`` on the others: websocket
message boundaries are not authenticated, so this is what stops an attacker on
the path from splitting one frame into two or gluing two into one. Any piece
that does not decrypt (tampered, replayed, reordered, dropped) raises
``RemoteProtocolError`` and the connection closes.
"""

from __future__ import annotations

import os
import struct
from typing import Final

import msgpack

from hearthfile.bus.noise import (
    MAX_PLAINTEXT_BYTES,
    TAGLEN,
    Buffer,
    CipherState,
    HandshakeState,
    KeyPair,
    RandomBytes,
)
from hearthfile.errors import LocalProtocolError, RemoteProtocolError
from hearthfile.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, NodeId, NodeKey

#: Mixed into the handshake hash: both sides must agree on it or msg 2 fails.
PROLOGUE: Final = b"hearthfile/1"
NOISE_PATTERN: Final = "XX"
#: Prefix of the bytes a node signs to bind its Noise static key to its NodeId.
SIGNATURE_DOMAIN: Final = b"hearthfile-noise-static-key:"
#: msgpack fixarray(2), bin8(32) key, bin8(64) signature.
IDENTITY_PAYLOAD_BYTES: Final = 1 + 2 + PUBLIC_KEY_BYTES + 2 + SIGNATURE_BYTES
#: Message 1 of XX is the initiator's bare ephemeral key.
FIRST_MESSAGE_BYTES: Final = 32

#: Associated data of a transport piece: is it the last piece of its frame?
AD_MORE: Final = b"\x00"
AD_LAST: Final = b"\x01"
_LENGTH: Final = struct.Struct(">H")
_PIECE_OVERHEAD: Final = _LENGTH.size + TAGLEN


class HandshakeError(RemoteProtocolError):
    """The peer failed the handshake.

    ``reason`` is short fixed text, safe to send back as the close reason;
    ``detail`` (in ``str(exc)`` only) is for our own log.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"handshake failed: {reason}" + (f" ({detail})" if detail else ""))
        self.reason = reason


def encrypted_frame_bytes(plaintext_bytes: int) -> int:
    """Size on the wire of a frame of ``plaintext_bytes`` (for the websocket size limit)."""
    pieces = max(1, -(-plaintext_bytes // MAX_PLAINTEXT_BYTES))
    return plaintext_bytes + pieces * _PIECE_OVERHEAD


def identity_payload(node_key: NodeKey, noise_static_public: bytes) -> bytes:
    """This node's handshake payload: its key and its signature over its static key."""
    signature = node_key.sign(SIGNATURE_DOMAIN + noise_static_public)
    # bus/frames.py is the wire's msgpack user; this one fixed array is the
    # exception, kept here so the handshake does not depend on the frame layer.
    packed: bytes = msgpack.packb([node_key.public_bytes, signature], use_bin_type=True)
    return packed


def verify_identity_payload(payload: bytes, noise_static_public: bytes) -> NodeId:
    """The NodeId proven by a peer's payload, or HandshakeError saying what is wrong."""
    if len(payload) != IDENTITY_PAYLOAD_BYTES:
        raise HandshakeError("identity payload has the wrong size")
    try:
        decoded = msgpack.unpackb(
            payload,
            use_list=True,
            raw=False,
            max_bin_len=SIGNATURE_BYTES,
            max_str_len=0,
            max_array_len=2,
            max_map_len=0,
            max_ext_len=0,
        )
    except Exception as exc:
        # msgpack raises outside its own hierarchy (ValueError, TypeError, ...).
        raise HandshakeError("identity payload is not msgpack") from exc
    if not _is_key_and_signature(decoded):
        raise HandshakeError("identity payload is not [key, signature]")
    public_key, signature = decoded
    if msgpack.packb([public_key, signature], use_bin_type=True) != payload:
        raise HandshakeError("identity payload is not canonically encoded")
    node_id = NodeId(public_key)
    if not node_id.verify(SIGNATURE_DOMAIN + noise_static_public, signature):
        raise HandshakeError("identity signature does not match the Noise static key")
    return node_id


def _is_key_and_signature(decoded: object) -> bool:
    return (
        isinstance(decoded, list)
        and len(decoded) == 2
        and isinstance(decoded[0], bytes)
        and len(decoded[0]) == PUBLIC_KEY_BYTES
        and isinstance(decoded[1], bytes)
        and len(decoded[1]) == SIGNATURE_BYTES
    )


class SecureSession:
    """The two transport ciphers of one connection, framing bus frames for the wire."""

    __slots__ = ("_receive", "_send", "max_frame_bytes")

    def __init__(self, send: CipherState, receive: CipherState, max_frame_bytes: int) -> None:
        self._send = send
        self._receive = receive
        self.max_frame_bytes = max_frame_bytes

    def encrypt_frame(self, plaintext: Buffer, headroom: int = 0) -> bytearray:
        """One frame -> the bytes of one websocket message, encrypted piece by piece
        straight into one buffer (no per-piece allocations, no join), after
        ``headroom`` bytes left free for the transport's header (bus/wsframe.py)."""
        view = memoryview(plaintext).cast("B")
        size = len(view)
        if size > self.max_frame_bytes:
            raise LocalProtocolError(f"frame of {size} bytes exceeds {self.max_frame_bytes}")
        wire = bytearray(headroom + encrypted_frame_bytes(size))
        out = memoryview(wire)
        start, offset = 0, headroom
        while True:
            end = min(start + MAX_PLAINTEXT_BYTES, size)
            last = end == size
            piece = end - start + TAGLEN
            _LENGTH.pack_into(wire, offset, piece)
            offset += _LENGTH.size
            ad = AD_LAST if last else AD_MORE
            self._send.encrypt_into(ad, view[start:end], out[offset : offset + piece])
            offset += piece
            if last:
                return wire
            start = end

    def decrypt_frame(self, data: Buffer) -> bytearray:
        """The bytes of one websocket message -> one frame; RemoteProtocolError if bad.

        The pieces' lengths are checked first (every bound before any work), then
        each piece is decrypted straight into its place in one buffer."""
        view = memoryview(data).cast("B")
        pieces = self._pieces(view)
        frame = bytearray(sum(end - start - TAGLEN for start, end in pieces))
        out = memoryview(frame)
        at = 0
        for start, end in pieces:
            ad = AD_LAST if end == len(view) else AD_MORE
            plain = end - start - TAGLEN
            self._receive.decrypt_into(ad, view[start:end], out[at : at + plain])
            at += plain
        return frame

    def _pieces(self, view: memoryview) -> list[tuple[int, int]]:
        """Where each piece's ciphertext lies in one message; RemoteProtocolError on a
        truncated or bad length, or a frame over ``max_frame_bytes``."""
        total = len(view)
        if total == 0:
            raise RemoteProtocolError("empty secure message")
        pieces: list[tuple[int, int]] = []
        plaintext_bytes = 0
        offset = 0
        while offset < total:
            if total - offset < _LENGTH.size:
                raise RemoteProtocolError("secure message truncated inside a length prefix")
            (length,) = _LENGTH.unpack_from(view, offset)
            start, end = offset + _LENGTH.size, offset + _LENGTH.size + length
            if length < TAGLEN or end > total:
                raise RemoteProtocolError("secure message has a bad piece length")
            plaintext_bytes += length - TAGLEN
            if plaintext_bytes > self.max_frame_bytes:
                raise RemoteProtocolError(f"frame exceeds {self.max_frame_bytes} bytes")
            pieces.append((start, end))
            offset = end
        return pieces


class Handshake:
    """One side of the hearthfile handshake (sans-IO).

    Drive it with::

        while not hs.complete:
            if hs.wants_write: send(hs.write_message())
            else: hs.read_message(receive())

    then read ``peer`` and take ``session(max_frame_bytes)``. Every failure the
    peer causes is a ``HandshakeError``. ``rng`` supplies the per-connection
    Noise static and ephemeral keys (in that order), for reproducible tests.
    """

    def __init__(
        self,
        *,
        initiator: bool,
        node_key: NodeKey,
        expected_peer: NodeId | None = None,
        rng: RandomBytes = os.urandom,
    ) -> None:
        self.initiator = initiator
        self._node_key = node_key
        self._expected_peer = expected_peer
        static = KeyPair.generate(rng)
        self._noise = HandshakeState(
            NOISE_PATTERN, initiator=initiator, prologue=PROLOGUE, static=static, rng=rng
        )
        self._payload = identity_payload(node_key, static.public)
        self._peer: NodeId | None = None
        self._messages_done = 0
        self._failed = False

    @property
    def complete(self) -> bool:
        """True once every message is through and the peer is proven."""
        return self._noise.complete and self._peer is not None

    @property
    def wants_write(self) -> bool:
        return not self._failed and self._noise.our_turn

    @property
    def peer(self) -> NodeId:
        if not self.complete or self._peer is None:
            raise LocalProtocolError("the peer is known only once the handshake completes")
        return self._peer

    @property
    def handshake_hash(self) -> bytes:
        """Unique to this connection once complete (usable for channel binding)."""
        return self._noise.handshake_hash

    def write_message(self) -> bytes:
        if self._failed:
            raise LocalProtocolError("the handshake has failed")
        payload = b"" if self._messages_done == 0 else self._payload
        message = self._noise.write_message(payload)
        self._messages_done += 1
        return message

    def read_message(self, message: bytes) -> None:
        if self._failed:
            raise LocalProtocolError("the handshake has failed")
        if self._noise.complete or self._noise.our_turn:
            raise HandshakeError("unexpected handshake message")
        # Any failure is final: the Noise state has moved past the message.
        self._failed = True
        number = self._messages_done + 1
        if number == 1 and len(message) != FIRST_MESSAGE_BYTES:
            raise HandshakeError("message 1 must be exactly the 32-byte ephemeral key")
        try:
            payload = self._noise.read_message(message)
        except RemoteProtocolError as exc:
            raise HandshakeError(f"message {number} does not decrypt") from exc
        if number > 1:
            self._accept_peer(payload)
        self._messages_done += 1
        self._failed = False

    def session(self, max_frame_bytes: int) -> SecureSession:
        """The transport ciphers, framing frames of at most ``max_frame_bytes``."""
        if not self.complete:
            raise LocalProtocolError("the handshake is not complete")
        send, receive = self._noise.split()
        return SecureSession(send, receive, max_frame_bytes)

    def _accept_peer(self, payload: bytes) -> None:
        remote_static = self._noise.remote_static
        assert remote_static is not None  # XX sends s before the first payload we check
        peer = verify_identity_payload(payload, remote_static)
        if self._expected_peer is not None and peer != self._expected_peer:
            raise HandshakeError(
                "unexpected node id", f"peer is {peer}, expected {self._expected_peer}"
            )
        self._peer = peer
