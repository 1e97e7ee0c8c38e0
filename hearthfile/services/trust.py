"""TrustService: trust, untrust and trusted for the local CLI, applied live (trio shell).

The trust book (hearthfile/trust/book.py) decides levels; this service is where a change
reaches the running node at once (DESIGN.md section 11):

- a peer raised to member or above while connected joins gossip now (an exchange opens
  immediately, so it hears and is heard within one round), and its next calls are
  admitted (the bus asks the book at every request);
- a peer lowered below a capability's level loses its running calls of that capability
  (they answer ``unauthorized``), and below member it leaves gossip.

Every capability here requires ``self``: only the node's own key changes its trust.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

from hearthfile.bus.capability import CallContext, CapabilityDescriptor, Registry, TrustLevel
from hearthfile.bus.connection import Connection
from hearthfile.errors import ServiceError
from hearthfile.identity import NodeId
from hearthfile.trust.book import TrustBook, TrustChange, TrustEntry, TrustError

log = logging.getLogger(__name__)

#: Rows one ``node.trusted`` answer carries; a book larger than this is cut (and says so).
MAX_TRUSTED_ROWS: Final = 10_000


class PeerConnections(Protocol):
    """The part of ``PeerPool`` a trust change acts on."""

    def connection(self, node_id: NodeId) -> Connection | None: ...

    def enforce_trust(self, node_id: NodeId) -> int: ...


class GossipPeers(Protocol):
    """The part of ``GossipService`` a trust change acts on."""

    def peer_up(self, node: NodeId) -> None: ...

    def peer_down(self, node: NodeId) -> None: ...


def _descriptor(name: str) -> CapabilityDescriptor:
    return CapabilityDescriptor(
        name=name,
        version=(1, 0),
        trust_required=TrustLevel.SELF,
        max_concurrent=4,
        timeout_seconds=30,
        stability="experimental",
    )


class LiveTrust:
    """Applies trust changes to open connections and to gossip."""

    def __init__(
        self,
        book: TrustBook,
        peers: PeerConnections,
        gossip: GossipPeers,
        emit: Callable[..., None],
    ) -> None:
        self.book = book
        self._peers = peers
        self._gossip = gossip
        self._emit = emit

    def apply(self, change: TrustChange) -> None:
        node = change.node
        if change.before != change.after:
            log.info(
                "trust_changed peer=%s before=%s after=%s",
                node.short(),
                change.before.label,
                change.after.label,
            )
            self._emit(
                "trust.changed",
                node_id=str(node),
                before=change.before.label,
                after=change.after.label,
            )
        if change.lowered:
            stopped = self._peers.enforce_trust(node)
            if stopped:
                log.info("trust_enforced peer=%s calls_stopped=%d", node.short(), stopped)
            if change.after < TrustLevel.MEMBER:
                self._gossip.peer_down(node)
        elif change.after >= TrustLevel.MEMBER and self._peers.connection(node) is not None:
            self._gossip.peer_up(node)


class TrustService:
    """``node.trust``, ``node.untrust``, ``node.trusted``."""

    def __init__(self, live: LiveTrust, clock: Callable[[], float] = time.time) -> None:
        self._live = live
        self._book = live.book
        self._clock = clock

    def register(self, registry: Registry) -> None:
        registry.register(_descriptor("node.trust"), self.trust)
        registry.register(_descriptor("node.untrust"), self.untrust)
        registry.register(_descriptor("node.trusted"), self.trusted)

    async def trust(self, ctx: CallContext) -> dict[str, Any]:
        args = want_map(ctx.args)
        node = _node_arg(args.get("node_id"))
        try:
            level = TrustLevel.parse_grantable(str(args.get("level")))
            change = self._book.grant(node, level, now=self._clock())
        except (ValueError, TrustError) as exc:
            raise bad(str(exc)) from None
        self._live.apply(change)
        return {"node_id": str(node), "level": level.label, "before": change.before.label}

    async def untrust(self, ctx: CallContext) -> dict[str, Any]:
        node = _node_arg(want_map(ctx.args).get("node_id"))
        try:
            change = self._book.revoke(node)
        except TrustError as exc:
            raise bad(str(exc)) from None
        self._live.apply(change)
        return {"node_id": str(node), "level": change.after.label, "before": change.before.label}

    async def trusted(self, ctx: CallContext) -> list[dict[str, Any]]:
        return [entry_row(e) for e in self._book.entries()[:MAX_TRUSTED_ROWS]]


def entry_row(entry: TrustEntry) -> dict[str, Any]:
    """One row of ``hearthfile trusted``."""
    return {
        "node_id": str(entry.node),
        "level": entry.level.label,
        "source": entry.source,
        "introducer": None if entry.introducer is None else str(entry.introducer),
        "since": entry.since,
    }


def _node_arg(value: object) -> NodeId:
    if not isinstance(value, str):
        raise bad("node_id must be a NodeID text")
    try:
        return NodeId.parse(value)
    except ValueError as exc:
        raise bad(str(exc)) from None


def want_map(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad("args must be a map")
    return value


def bad(detail: str) -> ServiceError:
    return ServiceError("bad_request", detail)
