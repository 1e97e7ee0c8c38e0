"""InviteService: invite, join, and the inviter's ``trust.join`` (trio shell).

The token codec, the invite book and the proof are pure (hearthfile/trust/invites.py);
this shell moves the clock, randomness and connections in (DESIGN.md section 11):

- ``node.invite`` (self): make a token for this node's reachable addresses;
- ``node.join`` (self): dial the inviter at the token's addresses with its NodeID
  pinned, present the proof inside the Noise channel, and once admitted trust the
  inviter back at the same level, as an introducer ("joined"), and stay connected;
- ``trust.join`` (strangers): the inviter's side. Rate-limited per caller and in all,
  one guess per attempt; success grants the caller the invite's level.

Tokens and secrets are never logged nor put in events; refusals are logged with the
caller's short id and the reason only.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

from hearthfile.bus.capability import CallContext, CapabilityDescriptor, Registry, TrustLevel
from hearthfile.bus.connection import Connection
from hearthfile.config import Address, parse_address
from hearthfile.errors import PeerUnavailable, ServiceError
from hearthfile.identity import NodeId
from hearthfile.services.control import control_descriptor
from hearthfile.services.trust import LiveTrust
from hearthfile.transfer.fileproto import bad, want_map
from hearthfile.trust.invites import (
    DEFAULT_TTL_S,
    ID_BYTES,
    MAX_TTL_S,
    MAX_USES,
    Admitted,
    InviteBook,
    JoinLimiter,
    TokenError,
    decode_token,
    encode_token,
)

log = logging.getLogger(__name__)

JOIN_CAP: Final = "trust.join"
JOIN_TIMEOUT_S: Final = 15.0
PROOF_BYTES: Final = 32

JOIN_DESCRIPTOR: Final = CapabilityDescriptor(
    name=JOIN_CAP,
    version=(1, 0),
    trust_required=TrustLevel.STRANGER,
    max_concurrent=2,
    timeout_seconds=10,
    stability="experimental",
    request_schema={"id": "bin 16: invite id", "proof": "bin 32: HMAC-SHA256 join proof"},
    response_schema={"level": "member | trusted", "node_id": "the inviter"},
)


class Dialer(Protocol):
    """The part of ``PeerPool`` a join uses."""

    async def get(self, node_id: NodeId, address: Address | None = None) -> Connection: ...

    def keep_connected(self, address: Address, node_id: NodeId | None = None) -> None: ...


def reachable(listen: Address) -> list[str]:
    """Addresses a token offers for ``listen``: an unspecified host (0.0.0.0, ::) is
    replaced by this machine's name's address, then loopback."""
    if listen.host not in ("0.0.0.0", "::", ""):
        return [str(listen)]
    found = []
    with contextlib.suppress(OSError):
        found.append(str(Address(socket.gethostbyname(socket.gethostname()), listen.port)))
    found.append(str(Address("127.0.0.1", listen.port)))
    return list(dict.fromkeys(found))


class InviteService:
    def __init__(
        self,
        live: LiveTrust,
        invites: InviteBook,
        pool: Dialer,
        addresses: Callable[[], list[str]],
        *,
        limiter: JoinLimiter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._live = live
        self._book = live.book
        self._invites = invites
        self._pool = pool
        self._addresses = addresses
        self._limiter = limiter or JoinLimiter()
        self._clock = clock

    def register(self, registry: Registry) -> None:
        registry.register(control_descriptor("node.invite", 10, max_concurrent=4), self.invite)
        registry.register(control_descriptor("node.join", 60, max_concurrent=4), self.join)
        registry.register(JOIN_DESCRIPTOR, self.handle_join)

    async def invite(self, ctx: CallContext) -> dict[str, Any]:
        args = want_map(ctx.args)
        try:
            level = TrustLevel.parse_grantable(str(args.get("level", "member")))
        except ValueError as exc:
            raise bad(str(exc)) from None
        uses, ttl_s = args.get("uses", 1), args.get("ttl_s", DEFAULT_TTL_S)
        if isinstance(uses, bool) or not isinstance(uses, int) or not 1 <= uses <= MAX_USES:
            raise bad(f"uses must be an integer 1..{MAX_USES}")
        if not isinstance(ttl_s, int | float) or not 0 < ttl_s <= MAX_TTL_S:
            raise bad(f"ttl must be between 1 s and {MAX_TTL_S} s")
        addresses = tuple(self._addresses()[:4])
        if not addresses:
            raise ServiceError("unavailable", "the node is not listening yet")
        try:
            token = self._invites.create(
                self._book.me,
                addresses,
                level=level,
                uses=uses,
                ttl_s=float(ttl_s),
                secret=secrets.token_bytes(16),
                now=self._clock(),
            )
        except ValueError as exc:
            raise ServiceError("capacity_exceeded", str(exc)) from None
        log.info(
            "invite_created level=%s uses=%d expires_at=%d", level.label, uses, token.expires_at
        )
        return {
            "token": encode_token(token),
            "level": level.label,
            "uses": uses,
            "expires_at": token.expires_at,
            "addresses": list(addresses),
        }

    async def join(self, ctx: CallContext) -> dict[str, Any]:
        text = want_map(ctx.args).get("token")
        try:
            token = decode_token(text if isinstance(text, str) else "")
        except TokenError as exc:
            raise bad(str(exc)) from None
        me = self._book.me
        if token.inviter == me:
            raise bad("this invite was made by this node: run join on the other machine")
        if self._clock() > token.expires_at:
            raise ServiceError("unauthorized", "invite expired")
        conn, address = await self._dial(token.inviter, token.addresses)
        answer = await conn.call(
            JOIN_CAP, {"id": token.invite_id, "proof": token.proof(me)}, timeout_s=JOIN_TIMEOUT_S
        )
        if not isinstance(answer, dict) or answer.get("node_id") != str(token.inviter):
            raise ServiceError("internal", "the inviter gave an unexpected answer")
        # Never lower a level this node already gave the inviter.
        level = max(token.level, min(self._book.level(token.inviter), TrustLevel.TRUSTED))
        change = self._book.grant(
            token.inviter, level, now=self._clock(), source="joined", address=str(address)
        )
        self._live.apply(change)
        self._pool.keep_connected(address, token.inviter)
        log.info("joined inviter=%s level=%s", token.inviter.short(), token.level.label)
        return {"inviter": str(token.inviter), "level": token.level.label}

    async def _dial(
        self, inviter: NodeId, addresses: tuple[str, ...]
    ) -> tuple[Connection, Address]:
        reasons = []
        for text in addresses:
            try:
                address = parse_address(text)
                return await self._pool.get(inviter, address), address
            except ValueError as exc:
                reasons.append(f"{text}: {exc}")
            except PeerUnavailable as exc:
                reasons.append(f"{text}: {exc.reason or exc}")
        raise ServiceError("unavailable", f"cannot reach inviter {inviter} ({'; '.join(reasons)})")

    async def handle_join(self, ctx: CallContext) -> dict[str, Any]:
        now = self._clock()
        if not self._limiter.allow(ctx.peer, now):
            log.warning("join_refused peer=%s reason=rate_limited", ctx.peer.short())
            raise ServiceError("busy", "too many join attempts: wait a minute")
        args = want_map(ctx.args)
        invite_id, proof = args.get("id"), args.get("proof")
        if not (isinstance(invite_id, bytes) and len(invite_id) == ID_BYTES):
            raise bad(f"id must be {ID_BYTES} bytes")
        if not (isinstance(proof, bytes) and len(proof) == PROOF_BYTES):
            raise bad(f"proof must be {PROOF_BYTES} bytes")
        outcome = self._invites.redeem(self._book.me, ctx.peer, invite_id, proof, now)
        if not isinstance(outcome, Admitted):
            log.warning(
                "join_refused peer=%s reason=%s", ctx.peer.short(), outcome.replace(" ", "_")
            )
            raise ServiceError("unauthorized", outcome)
        if self._book.level(ctx.peer) < outcome.level:
            self._live.apply(self._book.grant(ctx.peer, outcome.level, now=now, source="invite"))
        self._live.vouch(ctx.peer, outcome.level)
        log.info("join_accepted peer=%s level=%s", ctx.peer.short(), outcome.level.label)
        return {"level": outcome.level.label, "node_id": str(self._book.me)}
