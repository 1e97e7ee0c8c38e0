"""Introductions spread among members: ``trust.introductions`` (trio shell).

The records and the rules of who accepts them are pure (hearthfile/trust/
introductions.py). This shell floods them: a record new to us goes to every connected
member that is not known to hold it, and a member whose connection comes up gets
every record it is not known to hold, in messages of at most ``MAX_MESSAGE_RECORDS``.
A record counts as held by a peer once the peer sent it to us or acknowledged our
call; what a failed call carried is sent again on the next record, the next
connection, or within ``REPAIR_S``. The set is small (records per introducer and in
all are bounded), so this simple flood is also the repair.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol

import trio

from hearthfile.bus.capability import CallContext, CapabilityDescriptor, Registry, TrustLevel
from hearthfile.bus.connection import Connection
from hearthfile.errors import PeerUnavailable, ServiceError
from hearthfile.identity import NodeId
from hearthfile.trust.introductions import (
    MAX_MESSAGE_RECORDS,
    Introduction,
    IntroError,
    decode_introduction,
)

log = logging.getLogger(__name__)

INTRO_CAP: Final = "trust.introductions"
SEND_TIMEOUT_S: Final = 10.0
#: Every this often each connected member is sent what it is not known to hold: the
#: repair for a send refused or lost (e.g. sent before the peer trusted us back).
REPAIR_S: Final = 10.0

INTRO_DESCRIPTOR: Final = CapabilityDescriptor(
    name=INTRO_CAP,
    version=(1, 0),
    trust_required=TrustLevel.MEMBER,
    max_concurrent=4,
    timeout_seconds=10,
    idempotent=True,
    stability="experimental",
    request_schema={"r": f"array of at most {MAX_MESSAGE_RECORDS} introduction records"},
    response_schema={"t": "ok"},
)


class Connections(Protocol):
    def connection(self, node_id: NodeId) -> Connection | None: ...


class IntroSpreader:
    """Who holds which record, and the sends that fill the gaps."""

    def __init__(self, pool: Connections, is_member: Callable[[NodeId], bool]) -> None:
        self._pool = pool
        self._is_member = is_member
        self._held: dict[NodeId, set[tuple[NodeId, NodeId, int]]] = {}
        self._records: dict[tuple[NodeId, NodeId, int], Introduction] = {}
        self._nursery: trio.Nursery | None = None

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                await trio.sleep(REPAIR_S)
                for peer in list(self._held):
                    if self._pool.connection(peer) is not None:
                        self.sync(peer)

    def known(self, peer: NodeId, records: Iterable[Introduction]) -> None:
        """``peer`` holds these (it sent them to us)."""
        self._held.setdefault(peer, set()).update(_ident(r) for r in records)

    def spread(self, records: Iterable[Introduction], everyone: Iterable[NodeId]) -> None:
        """Send ``records`` to each member in ``everyone`` not known to hold them."""
        for record in records:
            self._records[_ident(record)] = record
        for peer in everyone:
            self.sync(peer)

    def sync(self, peer: NodeId) -> None:
        if self._nursery is None or not self._is_member(peer):
            return
        held = self._held.setdefault(peer, set())
        missing = [r for ident, r in self._records.items() if ident not in held]
        for start in range(0, len(missing), MAX_MESSAGE_RECORDS):
            self._nursery.start_soon(self._send, peer, missing[start : start + MAX_MESSAGE_RECORDS])

    def forget(self, peer: NodeId) -> None:
        self._held.pop(peer, None)

    def drop_superseded(self, current: Iterable[Introduction]) -> None:
        """Keep only the newest record per (introducer, subject) for sending."""
        keep = {_ident(r) for r in current}
        self._records = {i: r for i, r in self._records.items() if i in keep}

    async def _send(self, peer: NodeId, records: list[Introduction]) -> None:
        conn = self._pool.connection(peer)
        if conn is None:
            return
        try:
            await conn.call(
                INTRO_CAP, {"r": [r.encode() for r in records]}, timeout_s=SEND_TIMEOUT_S
            )
        except (ServiceError, PeerUnavailable) as exc:
            log.debug("intro_send_failed peer=%s reason=%s", peer.short(), exc)
            return
        self.known(peer, records)


def _ident(record: Introduction) -> tuple[NodeId, NodeId, int]:
    return (record.introducer, record.subject, record.seq)


class IntroReceiver(Protocol):
    def receive_introductions(self, sender: NodeId, records: list[Introduction]) -> None: ...


def decode_message(args: Any) -> list[Introduction]:
    """The records of one ``trust.introductions`` request; ``bad_request`` otherwise."""
    items = args.get("r") if isinstance(args, dict) else None
    if not isinstance(items, list) or len(items) > MAX_MESSAGE_RECORDS:
        raise ServiceError("bad_request", f"r must be a list of at most {MAX_MESSAGE_RECORDS}")
    try:
        return [decode_introduction(item) for item in items]
    except IntroError as exc:
        raise ServiceError("bad_request", f"introduction: {exc}") from None


class IntroService:
    """The capability; what to do with the records is the receiver's (``LiveTrust``)."""

    def __init__(self, receiver: IntroReceiver) -> None:
        self._receiver = receiver

    def register(self, registry: Registry) -> None:
        registry.register(INTRO_DESCRIPTOR, self.handle)

    async def handle(self, ctx: CallContext) -> dict[str, str]:
        self._receiver.receive_introductions(ctx.peer, decode_message(ctx.args))
        return {"t": "ok"}
