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

from hearthfile.bus.capability import CallContext, Registry, TrustLevel
from hearthfile.bus.connection import Connection
from hearthfile.events import Publish, TrustChanged
from hearthfile.identity import NodeId
from hearthfile.services.control import control_descriptor
from hearthfile.services.introduce import IntroSpreader
from hearthfile.transfer.fileproto import bad, want_map
from hearthfile.trust.book import TrustBook, TrustChange, TrustEntry, TrustError
from hearthfile.trust.introductions import (
    REVOKED,
    IntroBook,
    Introduction,
    apply_introduction,
    to_introduce,
)

log = logging.getLogger(__name__)

#: Rows one ``node.trusted`` page carries at most (a page must fit in one frame);
#: the caller asks for the next page ``after`` the last NodeID, as with ``file.list``.
MAX_TRUSTED_ROWS: Final = 10_000


class PeerConnections(Protocol):
    """The part of ``PeerPool`` a trust change acts on."""

    def connection(self, node_id: NodeId) -> Connection | None: ...

    def enforce_trust(self, node_id: NodeId) -> int: ...


class GossipPeers(Protocol):
    """The part of ``GossipService`` a trust change acts on."""

    def peer_up(self, node: NodeId) -> None: ...

    def peer_down(self, node: NodeId) -> None: ...


class LiveTrust:
    """The node's trust as it runs: applies changes to open connections and gossip,
    and follows and spreads introductions (hearthfile/trust/introductions.py)."""

    def __init__(
        self,
        book: TrustBook,
        peers: PeerConnections,
        gossip: GossipPeers,
        emit: Publish,
        *,
        intros: IntroBook | None = None,
        spreader: IntroSpreader | None = None,
        save_intros: Callable[[list[Introduction]], None] | None = None,
        introducers: str = "trusted",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.book = book
        self._peers = peers
        self._gossip = gossip
        self._emit = emit
        self._intros = intros
        self._spreader = spreader
        self._save_intros = save_intros
        self._policy = introducers
        self._clock = clock
        if intros is not None and spreader is not None:
            spreader.spread(intros.records(), ())  # what a new member connection is sent

    def apply(self, change: TrustChange) -> None:
        """A change of the book: act on it, then on what introductions now imply."""
        self._act(change)
        self._settle()

    def peer_up(self, node: NodeId) -> None:
        """A connection to ``node`` is up: gossip and introductions, if it is a member."""
        if self.book.level(node) >= TrustLevel.MEMBER and node != self.book.me:
            self._gossip.peer_up(node)
            if self._spreader is not None:
                self._spreader.sync(node)

    def peer_down(self, node: NodeId) -> None:
        self._gossip.peer_down(node)
        if self._spreader is not None:
            self._spreader.forget(node)

    def vouch(self, subject: NodeId, level: TrustLevel) -> None:
        """Sign and spread an introduction of ``subject`` (after our invite admitted it)."""
        if self._intros is None:
            return
        self._publish([self._intros.sign(subject, int(level), self._now_ms())])
        self._settle()

    def receive_introductions(self, sender: NodeId, records: list[Introduction]) -> None:
        if self._intros is None or self._spreader is None:
            return
        self._spreader.known(sender, records)
        fresh = []
        for record in records:
            if record.introducer != self.book.me and self.book.level(record.introducer) < (
                TrustLevel.MEMBER
            ):
                continue  # only members' records are kept: a member cannot fill the
                # table with records of keys it minted
            reason = self._intros.receive(record, self._now_ms())
            if reason is None:
                fresh.append(record)
            elif reason not in ("not_newer", "full"):
                log.warning("introduction_rejected sender=%s reason=%s", sender.short(), reason)
        if fresh:
            self._publish(fresh, signed=False)
            self._settle()

    def _act(self, change: TrustChange) -> None:
        node = change.node
        if change.before != change.after:
            log.info(
                "trust_changed peer=%s before=%s after=%s",
                node.short(),
                change.before.label,
                change.after.label,
            )
            self._emit(TrustChanged(node, change.before.label, change.after.label))
        if change.lowered:
            stopped = self._peers.enforce_trust(node)
            if stopped:
                log.info("trust_enforced peer=%s calls_stopped=%d", node.short(), stopped)
            if change.after < TrustLevel.MEMBER:
                self.peer_down(node)
        elif change.after >= TrustLevel.MEMBER and self._peers.connection(node) is not None:
            self.peer_up(node)

    def _settle(self) -> None:
        """Apply held introductions until nothing changes (each pass can make a new
        introducer), then vouch for, or revoke, what our own records should say."""
        if self._intros is None:
            return
        for _ in range(8):
            changes = [
                c
                for record in self._intros.records()
                if (c := apply_introduction(self.book, record, self._clock(), self._policy))
                is not None
            ]
            for change in changes:
                self._act(change)
            if not any(c.before != c.after for c in changes):
                break
        now_ms = self._now_ms()
        own = [
            self._intros.sign(node, level, now_ms)
            for node, level in to_introduce(self.book, self._intros)
        ]
        own += [
            self._intros.sign(r.subject, REVOKED, now_ms)
            for r in self._intros.records()
            if r.introducer == self.book.me
            and not r.revoked
            and self.book.level(r.subject) < TrustLevel.MEMBER
        ]
        if own:
            self._publish(own)

    def _publish(self, records: list[Introduction], *, signed: bool = True) -> None:
        assert self._intros is not None
        if self._save_intros is not None:
            self._save_intros(self._intros.records())
        if self._spreader is not None:
            self._spreader.drop_superseded(self._intros.records())
            members = [e.node for e in self.book.entries() if e.level >= TrustLevel.MEMBER]
            self._spreader.spread(records, members)
        if signed:
            for record in records:
                what = "revoked" if record.revoked else TrustLevel(record.level).label
                log.info("introduction_signed subject=%s level=%s", record.subject.short(), what)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)


class TrustService:
    """``node.trust``, ``node.untrust``, ``node.trusted``."""

    def __init__(self, live: LiveTrust, clock: Callable[[], float] = time.time) -> None:
        self._live = live
        self._book = live.book
        self._clock = clock

    def register(self, registry: Registry) -> None:
        for name, handler in [
            ("node.trust", self.trust),
            ("node.untrust", self.untrust),
            ("node.trusted", self.trusted),
        ]:
            registry.register(control_descriptor(name, max_concurrent=4), handler)

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
            change = self._book.revoke(node, block=True, now=self._clock())
        except TrustError as exc:
            raise bad(str(exc)) from None
        self._live.apply(change)
        return {"node_id": str(node), "level": change.after.label, "before": change.before.label}

    async def trusted(self, ctx: CallContext) -> dict[str, Any]:
        """``{after?, limit?}`` -> ``{items, next}``: one page of the trusted peers,
        sorted by NodeID; ``next`` is the ``after`` of the next page, nil at the end."""
        args = want_map(ctx.args)
        after = args.get("after", "")
        if not isinstance(after, str) or len(after) > 100:
            raise bad("after must be a NodeID text")
        limit = args.get("limit", MAX_TRUSTED_ROWS)
        if type(limit) is not int or not 1 <= limit <= MAX_TRUSTED_ROWS:
            raise bad(f"limit must be an integer in 1..{MAX_TRUSTED_ROWS}")
        return trusted_page(self._book.entries(), after, limit)


def trusted_page(entries: list[TrustEntry], after: str, limit: int) -> dict[str, Any]:
    """The ``limit`` entries after NodeID ``after`` (``entries`` sorted by NodeID)."""
    rest = [e for e in entries if str(e.node) > after]
    page = rest[:limit]
    more = len(rest) > limit
    return {"items": [entry_row(e) for e in page], "next": str(page[-1].node) if more else None}


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
