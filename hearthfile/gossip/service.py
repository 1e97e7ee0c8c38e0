"""GossipService: runs the gossip state machine over the bus (trio shell).

It moves time, connections and messages into ``Gossip`` (gossip/protocol.py)
and acts on what comes out: sends the exchanges it asks for over
``gossip.exchange`` calls, feeds accepted adverts into the SourceIndex, dials
peers learned from node records, and reports facts to the event log. The
decisions (what to send, what to believe) are all the core's.

Rounds run every ``interval_s`` with +-20% jitter, so a network started at
once does not gossip in lockstep.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

import trio

from hearthfile import events
from hearthfile.bus.capability import CallContext, CapabilityDescriptor, Registry, TrustLevel
from hearthfile.bus.pool import PeerPool
from hearthfile.cids import Cid
from hearthfile.config import GossipConfig, parse_address
from hearthfile.errors import PeerUnavailable, ServiceError
from hearthfile.events import Publish
from hearthfile.gossip.guard import DialBudget, RejectionLog
from hearthfile.gossip.index import SourceIndex
from hearthfile.gossip.messages import Digest, MessageError, decode_message, encode_message
from hearthfile.gossip.protocol import (
    Actions,
    AdvertAccepted,
    Event,
    Gossip,
    OriginExpired,
    OriginRefreshed,
    Outgoing,
    PeerLearned,
    RecordRejected,
)
from hearthfile.identity import NodeId

log = logging.getLogger(__name__)

EXCHANGE: Final = CapabilityDescriptor(
    name="gossip.exchange",
    version=(1, 0),
    trust_required=TrustLevel.MEMBER,
    max_concurrent=8,
    timeout_seconds=10,
    idempotent=True,
    request_schema={"t": "digest | records", "e|r|w": "see docs/PROTOCOL.md, gossip"},
    response_schema={"t": "records (answer to a digest) | ok"},
)
EXCHANGE_TIMEOUT_S: Final = 10.0
#: CIDs of each kind in one ``file.cid.advertised`` event (about 73 KB at most).
EVENT_CIDS: Final = 1000
JITTER: Final = 0.2


class GossipService:
    def __init__(
        self,
        gossip: Gossip,
        cfg: GossipConfig,
        sources: SourceIndex,
        pool: PeerPool,
        publish: Publish,
        *,
        dialable: Callable[[NodeId], bool],
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._gossip = gossip
        self._cfg = cfg
        self._sources = sources
        self._pool = pool
        #: ``publish(event)``: report a fact to the node's event bus.
        self._publish = publish
        self._dialable = dialable
        self._clock = clock
        self._rng = rng or random.Random()
        self._nursery: trio.Nursery | None = None
        self._rejections = RejectionLog()
        self._dials = DialBudget()

    def register(self, registry: Registry) -> None:
        registry.register(EXCHANGE, self.handle_exchange)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                spread = 1 + JITTER * (2 * self._rng.random() - 1)
                await trio.sleep(self._cfg.interval_s * spread)
                self._apply(self._gossip.tick(self._clock()))
                line = self._rejections.flush(self._clock())
                if line is not None:
                    log.warning("%s", line)

    # -- what the node tells us -------------------------------------------------------

    def publish(
        self, added: Iterable[Cid], removed: Iterable[Cid], addresses: list[str] | None = None
    ) -> None:
        """Our holdings (or addresses) changed: sign and spread the change."""
        added, removed = list(added), list(removed)
        self._apply(self._gossip.publish(added, removed, self._clock(), addresses))
        if added or removed:
            self._emit_cids("self", added, removed)

    def peer_up(self, node: NodeId) -> None:
        self._apply(self._gossip.add_peer(node, self._clock()))

    def peer_down(self, node: NodeId) -> None:
        self._gossip.remove_peer(node)

    def addresses(self, node: NodeId) -> tuple[str, ...]:
        """Where ``node``'s newest node record says it listens."""
        return self._gossip.addresses(node)

    def known_peers(self) -> list[dict[str, Any]]:
        """Origins known through gossip, with their addresses (for ``peers``)."""
        return [
            {"node_id": str(o), "addresses": list(self._gossip.addresses(o))}
            for o in self._gossip.origins()
            if o != self._gossip.me
        ]

    def _emit_cids(
        self, origin: str, added: list[Cid], removed: list[Cid], full: bool | None = None
    ) -> None:
        """``file.cid.advertised``, split into events of at most ``EVENT_CIDS`` CIDs of
        each kind: one event must fit in one frame of ``hearthfile events``."""
        for start in range(0, max(len(added), len(removed)), EVENT_CIDS):
            self._publish(
                events.CidsAdvertised(
                    origin,
                    tuple(added[start : start + EVENT_CIDS]),
                    tuple(removed[start : start + EVENT_CIDS]),
                    full,
                )
            )

    # -- the capability ---------------------------------------------------------------

    async def handle_exchange(self, ctx: CallContext) -> Any:
        try:
            message = decode_message(ctx.args)
        except MessageError as exc:
            self._apply(self._gossip.reject_message(ctx.peer, exc.reason))
            raise ServiceError("bad_request", exc.reason) from None
        actions = self._gossip.receive(ctx.peer, message, self._clock())
        self._apply(actions)
        return encode_message(actions.reply) if actions.reply is not None else {"t": "ok"}

    # -- acting on the core's output ------------------------------------------------------

    def _apply(self, actions: Actions) -> None:
        for event in actions.events:
            self._on_event(event)
        if self._nursery is None:
            return
        for outgoing in actions.outgoing:
            self._nursery.start_soon(self._send, outgoing)

    async def _send(self, outgoing: Outgoing) -> None:
        conn = self._pool.connection(outgoing.to)
        if conn is None:
            return
        try:
            answer = await conn.call(
                "gossip.exchange", encode_message(outgoing.message), timeout_s=EXCHANGE_TIMEOUT_S
            )
        except (ServiceError, PeerUnavailable) as exc:
            log.debug("gossip_send_failed peer=%s reason=%s", outgoing.to.short(), exc)
            return
        if not isinstance(outgoing.message, Digest):
            return
        try:
            reply = decode_message(answer)
        except MessageError as exc:
            self._apply(self._gossip.reject_message(outgoing.to, exc.reason))
            return
        self._apply(self._gossip.receive(outgoing.to, reply, self._clock()))

    def _on_event(self, event: Event) -> None:
        now = self._clock()
        if isinstance(event, AdvertAccepted):
            if event.full:
                self._sources.forget_node(event.origin)
            self._sources.record(event.origin, event.added, now)
            self._sources.withdraw(event.origin, event.removed)
            self._emit_cids(str(event.origin), list(event.added), list(event.removed), event.full)
        elif isinstance(event, OriginRefreshed):
            self._sources.record(event.origin, self._gossip.holdings(event.origin), now)
        elif isinstance(event, OriginExpired):
            self._sources.forget_node(event.origin)
            self._publish(events.OriginExpired(event.origin))
        elif isinstance(event, PeerLearned):
            self._publish(events.PeerLearned(event.node, tuple(event.addresses)))
            self._dial(event)
        elif isinstance(event, RecordRejected):
            line = self._rejections.add(event.sender.short(), event.reason, now)
            if line is not None:
                log.warning("%s", line)
            self._publish(events.RecordRejected(event.sender, event.reason))

    def _dial(self, event: PeerLearned) -> None:
        """Connect to a newly learned member we are not connected to yet."""
        if (
            self._nursery is None
            or not event.addresses
            or event.node == self._gossip.me
            or self._pool.connection(event.node) is not None
            or not self._dialable(event.node)
        ):
            return
        try:
            address = parse_address(event.addresses[0])
        except ValueError:
            return
        if not self._dials.allow(str(event.node), event.addresses[0], self._clock()):
            log.debug("dial_learned_deferred peer=%s (dial budget)", event.node.short())
            return

        async def dial() -> None:
            try:
                await self._pool.get(event.node, address)
            except PeerUnavailable as exc:
                log.debug("dial_learned_failed peer=%s reason=%s", event.node.short(), exc)

        self._nursery.start_soon(dial)
