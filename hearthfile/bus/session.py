"""The call table of one bus connection: ids, stream state, credit (pure, sans-IO).

``Session`` is the protocol core behind ``hearthfile.bus.connection``. It is fed every
decoded frame from the peer and every frame we are about to send, and it answers with
what happened (an event) or what to send (frames). It enforces the rules of
docs/PROTOCOL.md "Calls" and raises ``RemoteProtocolError`` when the peer breaks them; it
never blocks, sleeps, logs or reads a clock. The trio shell waits where this core says
"not yet" (no credit, no item) and wakes when an event names the call.

Call ids. Each side numbers the calls it opens: the dialer (Noise initiator) uses odd
ids 1, 3, 5, ..., the acceptor even ids 2, 4, 6, ..., each strictly increasing and never
reused on a connection. So every frame's id says whose call it belongs to, with no
direction flag, and both sides can open calls at once without colliding.

End of a call. Every call finishes with exactly one terminal frame from the callee,
``res`` or ``err``; nothing follows it for that id. ``end`` only closes one side's data
stream. A callee that streams sends its ``data`` frames, then ``end``, then ``res`` (so
``file.read`` sends "manifest, then chunks, then end", then a ``res`` summing up). A
stream with no ``data`` needs no ``end``, so a unary call is just ``req`` -> ``res``.
A ``res`` after ``data`` but before ``end`` is a violation; ``err`` may come at any point
and aborts both streams. The caller's stream ends with its ``end``; the callee may answer
before reading it (refusing a push early), after which the caller stops sending.
``cancel`` (caller only) ends the call for both sides at once: the caller forgets the id,
the callee stops its handler and sends nothing more for it.

Flow control. Each direction of each call has its own window: right after ``req`` each
side may send ``INITIAL_WINDOW`` data frames; the receiver grants more with ``credit``
as its application consumes items (in batches of ``CREDIT_BATCH``), so at most
``INITIAL_WINDOW`` items of a call ever wait in our memory, and a reader that stops
reading stalls only its own stream. Data beyond the granted credit is a violation.

Memory held for the peer. The bytes of the peer's calls to us -- each running call's
``req`` and every ``data`` item it sent that its handler has not yet taken -- count
against ``MAX_HELD_BYTES`` per connection, and against ``NODE_HELD_BYTES`` for all
connections of the node together, whatever the peers do. A ``req`` that would
pass it is refused ``busy``; a ``data`` frame that would pass it ends its call with
``err`` ``busy`` (the items it held are dropped, the handler stopped). A caller within
its credit is never a violation for this: it only sees ``busy`` and may retry. Our own
calls' answers are not counted: how many we open is ours to bound.

Late frames. After we cancel, answer or refuse a call, frames for it may still be in
flight; a frame whose id we issued or saw before but no longer track is dropped
silently. A frame naming an id that was never opened is a violation.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final

from hearthfile.bus.frames import (
    MAX_CALL_ID,
    Cancel,
    Credit,
    Data,
    End,
    ErrorResponse,
    Frame,
    Request,
    Response,
)
from hearthfile.errors import LocalProtocolError, RemoteProtocolError

#: Data frames each side may send on a new call before any ``credit``. 16 chunks of
#: 256 KiB (4 MiB, the most a stalled stream holds in the receiver's memory) cover the
#: credit round trip on a busy host, where 8 left loopback streams waiting for credit
#: (scripts/bench_bus.py; measured on a loaded 2-core VM, so re-check on quiet ones).
INITIAL_WINDOW: Final = 16
#: Consumed items are acknowledged with one ``credit`` per this many, not one each.
CREDIT_BATCH: Final = INITIAL_WINDOW // 2
#: Bytes of the peer's requests and unconsumed stream items one connection holds at
#: most (see "Memory held for the peer"): three full windows of 256 KiB chunks.
MAX_HELD_BYTES: Final = 16 * 1024 * 1024
#: The same, over all connections of the node together.
NODE_HELD_BYTES: Final = 256 * 1024 * 1024


@dataclass(slots=True)
class HeldBytes:
    """What several sessions hold together, and their common limit."""

    limit: int
    used: int = 0


#: Shared by every Session of the process unless one is given.
NODE_HELD: Final = HeldBytes(NODE_HELD_BYTES)


class Marker(Enum):
    """What ``Session.next_item`` returns when it has no item to give."""

    EMPTY = "empty"  # nothing buffered yet: wait for an event on this call
    END = "end"  # the peer's stream is over (``end``, ``res`` or ``err``)


@dataclass(slots=True)
class _Call:
    outgoing: bool  # we are the caller
    send_credit: int = INITIAL_WINDOW
    sent_data: bool = False
    send_ended: bool = False
    recv_allowance: int = INITIAL_WINDOW  # data frames the peer may still send
    recv_items: deque[tuple[Any, int]] = field(default_factory=deque)  # (item, bytes)
    held: int = 0  # bytes counted in Session.held_bytes for this call
    received_data: bool = False
    recv_ended: bool = False
    consumed: int = 0  # items taken since our last grant
    outcome: Response | ErrorResponse | None = None  # outgoing calls only


# --- events returned by Session.receive ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallRequested:
    """The peer opened a call; admit it (``accept``) or answer it (``refuse``)."""

    request: Request


@dataclass(frozen=True, slots=True)
class CallProgressed:
    """Data, end, credit or the outcome arrived for this call: wake its waiters."""

    call_id: int


@dataclass(frozen=True, slots=True)
class CallCancelled:
    """The caller abandoned this incoming call: stop its handler, send nothing more."""

    call_id: int


@dataclass(frozen=True, slots=True)
class CallOverflowed:
    """The peer's items would pass ``MAX_HELD_BYTES``: the call is dropped; stop its
    handler and send the ``err`` given."""

    error: ErrorResponse


Event = CallRequested | CallProgressed | CallCancelled | CallOverflowed


class Session:
    """All calls of one connection, in both directions."""

    def __init__(
        self,
        *,
        initiator: bool,
        max_held_bytes: int = MAX_HELD_BYTES,
        shared: HeldBytes | None = None,
    ) -> None:
        self._mine_odd = initiator
        self.max_held_bytes = max_held_bytes
        self.held_bytes = 0  # see "Memory held for the peer"
        #: What all connections of the node hold together (NODE_HELD_BYTES by default).
        self.shared = shared if shared is not None else NODE_HELD
        self._next_id = 1 if initiator else 2
        self._peer_highest = 0  # highest id the peer has opened
        self._calls: dict[int, _Call] = {}

    # --- ids ---

    def _is_mine(self, call_id: int) -> bool:
        return (call_id % 2 == 1) == self._mine_odd

    def _known(self, call_id: int) -> _Call | None:
        """The live call, None for a finished one; a never-opened id is a violation."""
        call = self._calls.get(call_id)
        if call is None:
            opened = (
                call_id < self._next_id if self._is_mine(call_id) else call_id <= self._peer_highest
            )
            if not opened:
                raise RemoteProtocolError(f"frame for call {call_id}, which was never opened")
        return call

    # --- our side ---

    def open_call(self, cap: str, version: tuple[int, int], args: Any) -> Request:
        """Start an outgoing call; send the returned ``req``."""
        if self._next_id > MAX_CALL_ID:
            raise LocalProtocolError("call ids exhausted on this connection; reconnect")
        call_id = self._next_id
        self._next_id += 2
        self._calls[call_id] = _Call(outgoing=True)
        return Request(call_id, cap, version, args)

    def can_hold(self, size: int) -> bool:
        """Whether ``size`` more bytes fit in what we hold for the peer (and for all)."""
        return (
            self.held_bytes + size <= self.max_held_bytes
            and self.shared.used + size <= self.shared.limit
        )

    def _hold(self, size: int) -> None:
        self.held_bytes += size
        self.shared.used += size

    def accept(self, request: Request, size: int = 0) -> None:
        """Admit an incoming call of ``size`` bytes (held until it finishes): its
        streams start with the initial windows."""
        self._calls[request.call_id] = _Call(outgoing=False, held=size)
        self._hold(size)

    def _pop(self, call_id: int) -> _Call | None:
        call = self._calls.pop(call_id, None)
        if call is not None:
            self._hold(-call.held)
        return call

    def refuse(self, request: Request, code: str, msg: str) -> ErrorResponse:
        """Answer an incoming call without admitting it."""
        return ErrorResponse(request.call_id, code, msg)

    def can_send(self, call_id: int) -> bool:
        call = self._calls.get(call_id)
        return (
            call is not None
            and call.outcome is None
            and not call.send_ended
            and call.send_credit > 0
        )

    def spend_credit(self, call_id: int) -> None:
        """Account for one ``data`` frame we send; only valid when ``can_send``."""
        if not self.can_send(call_id):
            raise LocalProtocolError(f"call {call_id} has no credit or its stream is closed")
        call = self._calls[call_id]
        call.send_credit -= 1
        call.sent_data = True

    def has_ended(self, call_id: int) -> bool:
        """Whether our stream on this call is closed."""
        call = self._calls.get(call_id)
        return call is None or call.send_ended

    def end_stream(self, call_id: int) -> End | None:
        """Close our stream; None when there is nothing to close."""
        call = self._calls.get(call_id)
        if call is None or call.send_ended or call.outcome is not None:
            return None
        call.send_ended = True
        return End(call_id)

    def respond(self, call_id: int, body: Any) -> list[Frame]:
        """Finish an incoming call: ``end`` if we streamed and had not ended, then ``res``.
        Nothing when the caller cancelled it meanwhile (the handler finished anyway)."""
        call = self._pop(call_id)
        if call is None:
            return []
        head: list[Frame] = [End(call_id)] if call.sent_data and not call.send_ended else []
        return [*head, Response(call_id, body)]

    def fail(self, call_id: int, code: str, msg: str) -> ErrorResponse:
        """Finish an incoming call with an error."""
        self._pop(call_id)
        return ErrorResponse(call_id, code, msg)

    def close_call(self, call_id: int) -> Cancel | None:
        """Forget a call we are done with; ``cancel`` to send if it had not finished."""
        call = self._pop(call_id)
        if call is None or not call.outgoing or call.outcome is not None:
            return None
        return Cancel(call_id)

    def next_item(self, call_id: int) -> tuple[Any, Credit | None]:
        """Take the next item of the peer's stream (or a ``Marker``), with any
        ``credit`` frame that taking it makes due."""
        call = self._calls.get(call_id)
        if call is None:
            return Marker.END, None
        if not call.recv_items:
            return (Marker.END if call.recv_ended else Marker.EMPTY), None
        item, size = call.recv_items.popleft()
        call.held -= size
        self._hold(-size)
        call.consumed += 1
        if call.consumed < CREDIT_BATCH or call.recv_ended:
            return item, None
        grant, call.consumed = call.consumed, 0
        call.recv_allowance += grant
        return item, Credit(call_id, grant)

    def outcome(self, call_id: int) -> Response | ErrorResponse | None:
        call = self._calls.get(call_id)
        return None if call is None else call.outcome

    def is_live(self, call_id: int) -> bool:
        return call_id in self._calls

    # --- the peer's side ---

    def receive(self, frame: Frame, size: int = 0) -> Event | None:
        """Apply one frame of ``size`` bytes from the peer; None when it was a late
        frame, dropped."""
        match frame:
            case Request():
                return self._on_request(frame)
            case Response() | ErrorResponse():
                return self._on_outcome(frame)
            case Data():
                return self._on_data(frame, size)
            case End():
                return self._on_end(frame)
            case Credit():
                return self._on_credit(frame)
            case Cancel():
                return self._on_cancel(frame)
        raise LocalProtocolError(f"not a frame: {frame!r}")

    def _on_request(self, frame: Request) -> Event:
        if self._is_mine(frame.call_id) or frame.call_id <= self._peer_highest:
            raise RemoteProtocolError(f"req with id {frame.call_id} out of sequence")
        self._peer_highest = frame.call_id
        return CallRequested(frame)

    def _on_outcome(self, frame: Response | ErrorResponse) -> Event | None:
        if not self._is_mine(frame.call_id):
            raise RemoteProtocolError(
                f"{frame.TAG} for call {frame.call_id}, which we did not open"
            )
        call = self._known(frame.call_id)
        if call is None:
            return None
        if call.outcome is not None:
            raise RemoteProtocolError(f"second terminal frame for call {frame.call_id}")
        if isinstance(frame, Response) and call.received_data and not call.recv_ended:
            raise RemoteProtocolError(f"res before end on streaming call {frame.call_id}")
        call.outcome = frame
        call.recv_ended = True
        return CallProgressed(frame.call_id)

    def _live_stream(self, frame: Data | End | Credit) -> _Call | None:
        call = self._known(frame.call_id)
        if call is not None and call.outcome is not None:
            raise RemoteProtocolError(f"{frame.TAG} after the outcome of call {frame.call_id}")
        return call

    def _on_data(self, frame: Data, size: int) -> Event | None:
        call = self._live_stream(frame)
        if call is None:
            return None
        if call.recv_ended:
            raise RemoteProtocolError(f"data after end on call {frame.call_id}")
        if call.recv_allowance <= 0:
            raise RemoteProtocolError(f"data beyond granted credit on call {frame.call_id}")
        call.recv_allowance -= 1
        call.received_data = True
        if not call.outgoing:
            if not self.can_hold(size):
                self._pop(frame.call_id)
                return CallOverflowed(
                    ErrorResponse(frame.call_id, "busy", "too much unread data held for you")
                )
            call.held += size
            self._hold(size)
        call.recv_items.append((frame.body, size))
        return CallProgressed(frame.call_id)

    def _on_end(self, frame: End) -> Event | None:
        call = self._live_stream(frame)
        if call is None:
            return None
        if call.recv_ended:
            raise RemoteProtocolError(f"second end on call {frame.call_id}")
        call.recv_ended = True
        return CallProgressed(frame.call_id)

    def _on_credit(self, frame: Credit) -> Event | None:
        call = self._live_stream(frame)
        if call is None:
            return None
        call.send_credit += frame.n
        return CallProgressed(frame.call_id)

    def _on_cancel(self, frame: Cancel) -> Event | None:
        if self._is_mine(frame.call_id):
            raise RemoteProtocolError(
                f"cancel for call {frame.call_id}, which the peer did not open"
            )
        call = self._known(frame.call_id)
        if call is None:
            return None
        self._pop(frame.call_id)
        return CallCancelled(frame.call_id)
