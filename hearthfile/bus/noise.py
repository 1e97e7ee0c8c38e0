"""The Noise Protocol Framework, rev 34, for 25519/AESGCM/SHA256 (pure, sans-IO).

Owns the cryptographic state machine of the secure channel: ``CipherState``,
``SymmetricState`` and ``HandshakeState`` exactly as sections 5.1-5.3 of the
Noise specification (revision 34, https://noiseprotocol.org/noise.html)
define them, for the interactive patterns ``NN`` and ``XX`` (section 7.5).
hearthfile uses ``Noise_XX_25519_AESGCM_SHA256``; ``NN`` is kept because it
costs one table row and the published test vectors exercise it.

Primitives (spec section 12); X25519 and AES-GCM from ``cryptography``, SHA-256
and HMAC from the standard library (OpenSSL underneath as well):

- DH: X25519, DHLEN = 32. A shared secret of all zeros (the peer sent a
  low-order point) is refused by the library; we report it as the peer's fault.
- Cipher: AES-256-GCM; the 96-bit nonce is 32 zero bits followed by the
  64-bit big-endian counter ``n``. Tag 16 bytes.
- Hash: SHA-256, HASHLEN = 32; HMAC-SHA256; ``HKDF(ck, ikm, n)`` as in
  section 4.3 (HMAC-based extract then expand, 2 or 3 outputs).

Each ``CipherState`` counts its nonce; a message that does not decrypt under
the next nonce (tampered, replayed, reordered, dropped) raises
``RemoteProtocolError`` and the caller closes the connection. No message may
exceed 65535 bytes (section 3), so a transport plaintext is at most 65519.

This module reads no clock and owns no socket; randomness for ephemeral keys
comes from an injectable ``rng(n) -> bytes`` (``os.urandom`` by default), so
tests can replay fixed keys.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hearthfile.errors import LocalProtocolError, RemoteProtocolError

DHLEN: Final = 32
HASHLEN: Final = 32
TAGLEN: Final = 16
#: Noise spec section 3: every Noise message, handshake or transport.
MAX_MESSAGE_BYTES: Final = 65535
MAX_PLAINTEXT_BYTES: Final = MAX_MESSAGE_BYTES - TAGLEN
#: Section 5.1: nonce 2^64-1 is reserved; reaching it means we must stop.
_NONCE_LIMIT: Final = 2**64 - 1
_NONCE: Final = struct.Struct(">4xQ")

RandomBytes = Callable[[int], bytes]
Buffer = bytes | bytearray | memoryview

#: Message patterns (section 7.5): tokens of each message, initiator first.
PATTERNS: Final[dict[str, tuple[tuple[str, ...], ...]]] = {
    "NN": (("e",), ("e", "ee")),
    "XX": (("e",), ("e", "ee", "s", "es"), ("s", "se")),
}


def protocol_name(pattern: str) -> bytes:
    return f"Noise_{pattern}_25519_AESGCM_SHA256".encode("ascii")


class KeyPair:
    """An X25519 key pair with its 32-byte public key precomputed."""

    __slots__ = ("private", "public")

    def __init__(self, private: X25519PrivateKey) -> None:
        self.private = private
        self.public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def from_private_bytes(cls, data: bytes) -> KeyPair:
        return cls(X25519PrivateKey.from_private_bytes(data))

    @classmethod
    def generate(cls, rng: RandomBytes = os.urandom) -> KeyPair:
        return cls.from_private_bytes(rng(DHLEN))


def dh(key_pair: KeyPair, public_key: bytes) -> bytes:
    """X25519(private, peer public); a degenerate peer key is the peer's fault."""
    try:
        return key_pair.private.exchange(X25519PublicKey.from_public_bytes(public_key))
    except ValueError as exc:
        raise RemoteProtocolError("peer sent an invalid X25519 public key") from exc


def hash_digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def hkdf(chaining_key: bytes, input_key_material: bytes, outputs: int) -> tuple[bytes, ...]:
    """Noise section 4.3: HKDF with HMAC-SHA256, returning 2 or 3 32-byte outputs."""
    temp_key = hmac.digest(chaining_key, input_key_material, "sha256")
    results: list[bytes] = []
    previous = b""
    for index in range(1, outputs + 1):
        previous = hmac.digest(temp_key, previous + bytes([index]), "sha256")
        results.append(previous)
    return tuple(results)


class CipherState:
    """Section 5.1: a key (or none) and a 64-bit nonce counter."""

    __slots__ = ("_aead", "_key", "nonce")

    def __init__(self, key: bytes | None = None) -> None:
        self._key: bytes | None = None
        self._aead: AESGCM | None = None
        self.nonce = 0
        if key is not None:
            self.initialize_key(key)

    def initialize_key(self, key: bytes) -> None:
        self._key = key
        self._aead = AESGCM(key)
        self.nonce = 0

    def has_key(self) -> bool:
        return self._aead is not None

    def encrypt_with_ad(self, ad: bytes, plaintext: Buffer) -> bytes:
        """Ciphertext and tag; with no key yet, the plaintext itself (spec behaviour)."""
        if self._aead is None:
            return bytes(plaintext)
        ciphertext = bytearray(memoryview(plaintext).nbytes + TAGLEN)
        self.encrypt_into(ad, plaintext, memoryview(ciphertext))
        return bytes(ciphertext)

    def encrypt_into(self, ad: bytes, plaintext: Buffer, out: memoryview) -> None:
        """``encrypt_with_ad`` writing ciphertext and tag into ``out`` (exactly
        ``len(plaintext) + TAGLEN`` bytes): a transport piece with no allocation."""
        if self._aead is None:
            raise LocalProtocolError("encrypt_into needs a key")
        if self.nonce >= _NONCE_LIMIT:
            raise LocalProtocolError("Noise nonce exhausted; the connection must be re-established")
        self._aead.encrypt_into(_NONCE.pack(self.nonce), plaintext, ad, out)
        self.nonce += 1

    def decrypt_into(self, ad: bytes, ciphertext: Buffer, out: memoryview) -> None:
        """``decrypt_with_ad`` writing the plaintext into ``out`` (exactly
        ``len(ciphertext) - TAGLEN`` bytes); RemoteProtocolError if it does not
        authenticate under this nonce (the bytes are not what the peer's cipher
        produced for it)."""
        if self._aead is None:
            raise LocalProtocolError("decrypt_into needs a key")
        if self.nonce >= _NONCE_LIMIT:
            raise RemoteProtocolError("peer exhausted the Noise nonce space")
        try:
            self._aead.decrypt_into(_NONCE.pack(self.nonce), ciphertext, ad, out)
        except InvalidTag as exc:
            raise RemoteProtocolError(
                f"Noise message {self.nonce} failed authentication (tampered, replayed or out"
                " of order)"
            ) from exc
        self.nonce += 1

    def decrypt_with_ad(self, ad: bytes, ciphertext: Buffer) -> bytes:
        """Plaintext, or RemoteProtocolError if it does not authenticate under this nonce."""
        if self._aead is None:
            return bytes(ciphertext)
        size = memoryview(ciphertext).nbytes
        if size < TAGLEN:
            raise RemoteProtocolError("Noise ciphertext shorter than its tag")
        plaintext = bytearray(size - TAGLEN)
        self.decrypt_into(ad, ciphertext, memoryview(plaintext))
        return bytes(plaintext)

    def rekey(self) -> None:
        """Section 4.2 REKEY: the first 32 bytes of ENCRYPT(k, maxnonce, "", zeros)."""
        if self._key is None:
            raise LocalProtocolError("cannot rekey a CipherState without a key")
        new_key = AESGCM(self._key).encrypt(_NONCE.pack(_NONCE_LIMIT), bytes(32), b"")[:32]
        nonce = self.nonce
        self.initialize_key(new_key)
        self.nonce = nonce


class SymmetricState:
    """Section 5.2: chaining key, handshake hash and the handshake's CipherState."""

    __slots__ = ("_chaining_key", "_cipher", "_hash")

    def __init__(self, name: bytes) -> None:
        self._hash = name.ljust(HASHLEN, b"\x00") if len(name) <= HASHLEN else hash_digest(name)
        self._chaining_key = self._hash
        self._cipher = CipherState()

    def mix_key(self, input_key_material: bytes) -> None:
        self._chaining_key, temp_key = hkdf(self._chaining_key, input_key_material, 2)
        self._cipher.initialize_key(temp_key)

    def mix_hash(self, data: bytes) -> None:
        self._hash = hash_digest(self._hash + data)

    def has_key(self) -> bool:
        return self._cipher.has_key()

    @property
    def handshake_hash(self) -> bytes:
        return self._hash

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self._cipher.encrypt_with_ad(self._hash, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self._cipher.decrypt_with_ad(self._hash, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        """The initiator-to-responder and responder-to-initiator transport ciphers."""
        first, second = hkdf(self._chaining_key, b"", 2)
        return CipherState(first), CipherState(second)


class HandshakeState:
    """Section 5.3 for one side of an NN or XX handshake.

    Call ``write_message`` / ``read_message`` in turn (the initiator writes
    message 0). After the last message ``complete`` is true and ``split()``
    gives this side's (send, receive) transport ciphers.
    """

    def __init__(
        self,
        pattern: str,
        *,
        initiator: bool,
        prologue: bytes = b"",
        static: KeyPair | None = None,
        ephemeral: KeyPair | None = None,
        rng: RandomBytes = os.urandom,
    ) -> None:
        if pattern not in PATTERNS:
            raise ValueError(f"unsupported Noise pattern {pattern!r}")
        self._messages = PATTERNS[pattern]
        if static is None and any("s" in tokens for tokens in self._messages):
            raise ValueError(f"pattern {pattern} needs a static key")
        self.initiator = initiator
        self._symmetric = SymmetricState(protocol_name(pattern))
        self._symmetric.mix_hash(prologue)
        self._s = static
        self._e = ephemeral
        self._rs: bytes | None = None
        self._re: bytes | None = None
        self._rng = rng
        self._index = 0
        self._transport: tuple[CipherState, CipherState] | None = None

    @property
    def complete(self) -> bool:
        return self._index >= len(self._messages)

    @property
    def our_turn(self) -> bool:
        """Whether the next handshake message is ours to write."""
        return not self.complete and (self._index % 2 == 0) == self.initiator

    @property
    def remote_static(self) -> bytes | None:
        return self._rs

    @property
    def handshake_hash(self) -> bytes:
        return self._symmetric.handshake_hash

    def write_message(self, payload: bytes = b"") -> bytes:
        """The next handshake message, carrying ``payload``."""
        if not self.our_turn:
            raise LocalProtocolError("not our turn to write a handshake message")
        out = bytearray()
        for token in self._messages[self._index]:
            out += self._write_token(token)
        out += self._symmetric.encrypt_and_hash(payload)
        if len(out) > MAX_MESSAGE_BYTES:
            raise LocalProtocolError("handshake message over 65535 bytes")
        self._advance()
        return bytes(out)

    def read_message(self, message: bytes) -> bytes:
        """Consume the peer's next handshake message; returns its payload."""
        if self.complete or self.our_turn:
            raise LocalProtocolError("not expecting a handshake message from the peer")
        if len(message) > MAX_MESSAGE_BYTES:
            raise RemoteProtocolError("handshake message over 65535 bytes")
        view = memoryview(message)
        for token in self._messages[self._index]:
            view = self._read_token(token, view)
        payload = self._symmetric.decrypt_and_hash(bytes(view))
        self._advance()
        return payload

    def split(self) -> tuple[CipherState, CipherState]:
        """This side's (send, receive) transport ciphers; only once complete."""
        if self._transport is None:
            raise LocalProtocolError("the handshake is not complete")
        initiator_to_responder, responder_to_initiator = self._transport
        if self.initiator:
            return initiator_to_responder, responder_to_initiator
        return responder_to_initiator, initiator_to_responder

    def _advance(self) -> None:
        self._index += 1
        if self.complete:
            self._transport = self._symmetric.split()

    def _write_token(self, token: str) -> bytes:
        if token == "e":
            if self._e is None:
                self._e = KeyPair.generate(self._rng)
            self._symmetric.mix_hash(self._e.public)
            return self._e.public
        if token == "s":
            assert self._s is not None  # checked in __init__
            return self._symmetric.encrypt_and_hash(self._s.public)
        self._mix_dh(token)
        return b""

    def _read_token(self, token: str, view: memoryview) -> memoryview:
        if token == "e":
            if len(view) < DHLEN:
                raise RemoteProtocolError("handshake message too short for an ephemeral key")
            self._re = bytes(view[:DHLEN])
            self._symmetric.mix_hash(self._re)
            return view[DHLEN:]
        if token == "s":
            size = DHLEN + TAGLEN if self._symmetric.has_key() else DHLEN
            if len(view) < size:
                raise RemoteProtocolError("handshake message too short for a static key")
            self._rs = self._symmetric.decrypt_and_hash(bytes(view[:size]))
            return view[size:]
        self._mix_dh(token)
        return view

    def _mix_dh(self, token: str) -> None:
        """ee/es/se/ss: which local key meets which remote key depends on our role."""
        local_name, remote_name = token[0], token[1]
        if not self.initiator:
            local_name, remote_name = remote_name, local_name
        local = self._e if local_name == "e" else self._s
        remote = self._re if remote_name == "e" else self._rs
        if local is None or remote is None:
            raise LocalProtocolError(f"Noise token {token!r} before its keys are known")
        self._symmetric.mix_key(dh(local, remote))
