"""Invite tokens, their redemption and the join proof (pure; DESIGN.md section 11).

A token is one line of lowercase base32 behind the prefix ``hfinv1``, copy-paste safe
(no spaces, no padding, no characters a terminal or a mail client rewrites). It holds:

    version   1 byte   1
    inviter   32 bytes the inviter's Ed25519 public key (its NodeID)
    level     1 byte   1 member, 2 trusted
    expires   8 bytes  Unix seconds, big-endian
    secret    16 bytes 128 random bits
    addresses 1 byte count (1..4), then per address 1 byte length + UTF-8 ``host:port``
    check     4 bytes  BLAKE3 of everything above, truncated: a mistyped or tampered
                       character is caught on the joiner's side with a clear message

The inviter keeps no secret, only ``invite_id = BLAKE3("hearthfile invite id" | secret)``
(16 bytes, the lookup key) and ``join_key = BLAKE3("hearthfile invite key" | secret)``
(32 bytes): its invite file or memory leaking does not give the token away. The joiner
derives both from the secret and proves it holds the token, inside the Noise channel
to the pinned inviter, with

    proof = HMAC-SHA256(join_key, "hearthfile-join-v1" | inviter key | joiner key)

The proof is bound to both identities the channel authenticated, so a join message
captured and replayed by any other node proves nothing (and the invite is single-use
by default anyway). The inviter compares in constant time (``hmac.compare_digest``).

Each join attempt is one guess; ``JoinLimiter`` bounds attempts per peer and in all,
so the 128-bit secret cannot be ground against, and a stranger cannot make the node
do unbounded work.
"""

from __future__ import annotations

import base64
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Final, Protocol

import blake3

from hearthfile.identity import NodeId
from hearthfile.trust.levels import TrustLevel

TOKEN_PREFIX: Final = "hfinv1"
TOKEN_VERSION: Final = 1
SECRET_BYTES: Final = 16
ID_BYTES: Final = 16
KEY_BYTES: Final = 32
CHECK_BYTES: Final = 4
MAX_ADDRESSES: Final = 4
MAX_ADDRESS_BYTES: Final = 64
#: Longest a token may live, and most uses: an invite is for a few machines, soon.
MAX_TTL_S: Final = 30 * 24 * 3600
MAX_USES: Final = 1000
#: Open invites one node keeps: bounds the invite file and the lookups.
MAX_OPEN_INVITES: Final = 1000
DEFAULT_TTL_S: Final = 3600.0
JOIN_DOMAIN: Final = b"hearthfile-join-v1"

_LEVEL_BYTES: Final = {TrustLevel.MEMBER: 1, TrustLevel.TRUSTED: 2}
_LEVELS: Final = {v: k for k, v in _LEVEL_BYTES.items()}
_DURATION: Final = re.compile(r"([0-9]+)([smhd])")
_UNIT_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class TokenError(ValueError):
    """A token that cannot be used; the message is the one line the user sees."""


@dataclass(frozen=True, slots=True)
class Token:
    inviter: NodeId
    level: TrustLevel
    expires_at: int
    secret: bytes
    addresses: tuple[str, ...]

    @property
    def invite_id(self) -> bytes:
        return invite_id(self.secret)

    def proof(self, joiner: NodeId) -> bytes:
        """What the joiner sends: proves the secret, bound to both identities."""
        return join_proof(join_key(self.secret), self.inviter, joiner)


def invite_id(secret: bytes) -> bytes:
    return blake3.blake3(b"hearthfile invite id" + secret).digest()[:ID_BYTES]


def join_key(secret: bytes) -> bytes:
    return blake3.blake3(b"hearthfile invite key" + secret).digest()[:KEY_BYTES]


def join_proof(key: bytes, inviter: NodeId, joiner: NodeId) -> bytes:
    return hmac.digest(key, JOIN_DOMAIN + inviter.public_key + joiner.public_key, "sha256")


def encode_token(token: Token) -> str:
    if not 1 <= len(token.addresses) <= MAX_ADDRESSES:
        raise ValueError(f"a token holds 1 to {MAX_ADDRESSES} addresses")
    body = bytearray([TOKEN_VERSION])
    body += token.inviter.public_key
    body.append(_LEVEL_BYTES[token.level])
    body += token.expires_at.to_bytes(8, "big")
    body += token.secret
    body.append(len(token.addresses))
    for address in token.addresses:
        raw = address.encode()
        if not 0 < len(raw) <= MAX_ADDRESS_BYTES:
            raise ValueError(f"address {address!r} is too long for a token")
        body += bytes([len(raw)]) + raw
    body += blake3.blake3(bytes(body)).digest()[:CHECK_BYTES]
    return TOKEN_PREFIX + base64.b32encode(bytes(body)).decode().rstrip("=").lower()


def decode_token(text: str) -> Token:
    """Parse a token; ``TokenError`` with one line saying what is wrong."""
    text = text.strip()
    if not text.startswith(TOKEN_PREFIX):
        raise TokenError(f"not an invite token (it should start with {TOKEN_PREFIX!r})")
    body_text = text[len(TOKEN_PREFIX) :]
    if len(body_text) > 1024 or not re.fullmatch(r"[a-z2-7]+", body_text):
        raise TokenError("invite token damaged: unexpected characters or length")
    try:
        raw = base64.b32decode(body_text.upper() + "=" * (-len(body_text) % 8))
    except ValueError:
        raise TokenError("invite token damaged: not valid base32") from None
    body, check = raw[:-CHECK_BYTES], raw[-CHECK_BYTES:]
    canonical = base64.b32encode(raw).decode().rstrip("=").lower()
    if canonical != body_text or blake3.blake3(body).digest()[:CHECK_BYTES] != check:
        raise TokenError("invite token damaged or altered: its checksum does not match")
    try:
        return _parse_body(body)
    except (IndexError, ValueError, KeyError, UnicodeDecodeError):
        raise TokenError("invite token malformed") from None


def _parse_body(body: bytes) -> Token:
    if body[0] != TOKEN_VERSION:
        raise TokenError(f"invite token version {body[0]} is not supported")
    inviter = NodeId(body[1:33])
    level = _LEVELS[body[33]]
    expires_at = int.from_bytes(body[34:42], "big")
    secret = body[42 : 42 + SECRET_BYTES]
    at = 42 + SECRET_BYTES
    count = body[at]
    at += 1
    if not 1 <= count <= MAX_ADDRESSES:
        raise ValueError("address count")
    addresses = []
    for _ in range(count):
        length = body[at]
        addresses.append(body[at + 1 : at + 1 + length].decode())
        at += 1 + length
    if at != len(body) or len(secret) != SECRET_BYTES:
        raise ValueError("length")
    return Token(inviter, level, expires_at, secret, tuple(addresses))


def parse_duration(text: str) -> float:
    """``30m``, ``1h``, ``7d`` (also ``s``) -> seconds; ValueError otherwise."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"a duration is a number and a unit s, m, h or d (e.g. 1h), not {text!r}")
    seconds = int(match.group(1)) * _UNIT_S[match.group(2)]
    if not 0 < seconds <= MAX_TTL_S:
        raise ValueError(f"a duration must be between 1s and {MAX_TTL_S // 86400}d")
    return float(seconds)


# --- the inviter's side ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Invite:
    """An open invite as the inviter keeps it: no secret, only what checks a proof."""

    invite_id: bytes
    join_key: bytes
    level: TrustLevel
    expires_at: int
    uses_left: int
    created_at: float


@dataclass(frozen=True, slots=True)
class Admitted:
    """A join that proved a live invite: grant ``level`` to the joiner."""

    level: TrustLevel
    uses_left: int


class InviteStore(Protocol):
    def save(self, invites: list[Invite]) -> None: ...


class InviteBook:
    """The open invites of one node."""

    def __init__(self, invites: Iterable[Invite] = (), store: InviteStore | None = None) -> None:
        self._invites = {i.invite_id: i for i in invites}
        self._store = store

    def __len__(self) -> int:
        return len(self._invites)

    def create(
        self,
        inviter: NodeId,
        addresses: tuple[str, ...],
        *,
        level: TrustLevel,
        uses: int,
        ttl_s: float,
        secret: bytes,
        now: float,
    ) -> Token:
        """A new invite; ``secret`` comes from the shell's ``secrets.token_bytes``."""
        if len(secret) != SECRET_BYTES:
            raise ValueError(f"an invite secret is {SECRET_BYTES} bytes")
        if not 1 <= uses <= MAX_USES:
            raise ValueError(f"uses must be 1..{MAX_USES}")
        if level not in _LEVEL_BYTES:
            raise ValueError("an invite grants member or trusted")
        self.expire(now)
        if len(self._invites) >= MAX_OPEN_INVITES:
            raise ValueError(f"{MAX_OPEN_INVITES} invites are open already")
        token = Token(inviter, level, int(now + ttl_s), secret, addresses)
        invite = Invite(token.invite_id, join_key(secret), level, token.expires_at, uses, now)
        self._invites[invite.invite_id] = invite
        self._save()
        return token

    def redeem(
        self, inviter: NodeId, joiner: NodeId, presented_id: bytes, proof: bytes, now: float
    ) -> Admitted | str:
        """Check one join attempt: ``Admitted``, or the reason it grants nothing."""
        invite = self._invites.get(presented_id)
        if invite is None:
            return "unknown or already used invite"
        expected = join_proof(invite.join_key, inviter, joiner)
        if not hmac.compare_digest(expected, proof):
            return "invite proof does not match"
        if now > invite.expires_at:
            self._drop(invite.invite_id)
            return "invite expired"
        if invite.uses_left <= 1:
            self._drop(invite.invite_id)
        else:
            self._invites[invite.invite_id] = replace(invite, uses_left=invite.uses_left - 1)
            self._save()
        return Admitted(invite.level, invite.uses_left - 1)

    def expire(self, now: float) -> None:
        gone = [i for i, inv in self._invites.items() if now > inv.expires_at]
        for invite_id in gone:
            del self._invites[invite_id]
        if gone:
            self._save()

    def _drop(self, invite_id: bytes) -> None:
        del self._invites[invite_id]
        self._save()

    def _save(self) -> None:
        if self._store is not None:
            self._store.save(list(self._invites.values()))


class JoinLimiter:
    """Token buckets for join attempts: ``per_peer`` each (a burst of that many, then one
    every ``refill_s``), and ``total`` across everyone (one every ``refill_s / 4``)."""

    def __init__(self, per_peer: int = 5, total: int = 20, refill_s: float = 12.0) -> None:
        self._per_peer, self._total, self._refill_s = per_peer, total, refill_s
        self._peers: dict[NodeId, tuple[float, float]] = {}
        self._all = (float(total), 0.0)

    def allow(self, peer: NodeId, now: float) -> bool:
        level, at = self._peers.get(peer, (float(self._per_peer), now))
        level = min(self._per_peer, level + (now - at) / self._refill_s)
        total, total_at = self._all
        total = min(self._total, total + (now - total_at) * 4 / self._refill_s)
        if level < 1 or total < 1:
            return False
        self._peers[peer] = (level - 1, now)
        self._all = (total - 1, now)
        if len(self._peers) > 4096:  # forget the fullest buckets' owners first
            self._peers = dict(sorted(self._peers.items(), key=lambda kv: kv[1][0])[:2048])
        return True
