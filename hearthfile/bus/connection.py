"""One authenticated bus connection: concurrent calls in both directions (trio shell).

``Connection`` drives the pure ``Session`` core (hearthfile/bus/session.py, whose module
docstring states the call rules: ids, end of call, credit, late frames) over any
``MessageChannel``. It owns three kinds of task, all in the nursery of ``serve``:

- the reader: receive a message, decode it, feed the core, act on the event. It never
  waits for anything but the next message -- frames it must send (``credit``, refusals)
  are queued without waiting -- so two peers can never deadlock each other's reads;
- the writer: the only task that touches ``send_message``, draining the ``Outbox``
  (hearthfile/bus/outbox.py), so a frame is never cut in half when the task that
  produced it is cancelled;
- one task per admitted incoming call, running its handler under the capability's
  ``timeout_seconds``.

Callers use ``call`` (unary) or ``open_call`` (streams); handlers see a ``CallContext``.
A handler's return value becomes ``res``; ``ServiceError`` becomes ``err`` with its code;
any other exception becomes ``internal`` with a fixed message while the traceback is
logged here, never sent. A call is admitted per capability.admit, with the caller's
trust asked of ``trust_of`` at that moment; ``max_concurrent`` counts the calls running
on this connection. Every connection serves ``bus.describe`` (``install_describe`` adds
it to the registry if absent). Data items are passed by reference from the decoder to
the reader of the stream: no copies here.

A frame that breaks the protocol (undecodable, credit overrun, a never-opened id, ...)
closes the whole connection with one warning naming the peer: past that point nothing
it says can be trusted to line up with our call table. Frames for calls that already
finished are dropped silently (see session.py, "Late frames").
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import trio

from hearthfile.bus.capability import (
    DESCRIBE_CAP,
    DESCRIBE_DESCRIPTOR,
    CallContext,
    Registration,
    Registry,
    Rejection,
    TrustLevel,
    admit,
)
from hearthfile.bus.channel import MessageChannel
from hearthfile.bus.frames import MAX_ERROR_MSG_BYTES, Data, ErrorResponse, Frame, Request, encode
from hearthfile.bus.frames import decode as decode_frame
from hearthfile.bus.outbox import Outbox, Signal
from hearthfile.bus.session import (
    CallCancelled,
    CallOverflowed,
    CallProgressed,
    CallRequested,
    Event,
    Marker,
    Session,
)
from hearthfile.errors import (
    LocalProtocolError,
    PeerUnavailable,
    RemoteProtocolError,
    ServiceError,
    collapse,
)
from hearthfile.identity import NodeId

log = logging.getLogger(__name__)

#: How long closing the channel may take once the connection is over.
CLOSE_TIMEOUT_S: Final = 5.0
#: Sent instead of the text of an unexpected handler exception.
INTERNAL_MESSAGE: Final = "internal error"


#: The answer to a request that would pass what we hold for the peer (session.py).
HELD_REJECTION: Final = Rejection("busy", "too much of your data held already; retry later")


def _clip(text: str, limit: int = MAX_ERROR_MSG_BYTES) -> str:
    """Cut ``text`` to at most ``limit`` UTF-8 bytes without splitting a character."""
    return text.encode()[:limit].decode(errors="ignore")


@dataclass(frozen=True, slots=True)
class ConnectionStats:
    """Counters of one connection; bytes are plaintext frame bytes (before encryption)."""

    frames_in: int
    frames_out: int
    bytes_in: int
    bytes_out: int
    handlers_running: int
    calls_open: int
    #: Bytes of the peer's requests and unread items held (at most MAX_HELD_BYTES).
    held_bytes: int


class Connection:
    """Calls to and from one authenticated peer over one ``MessageChannel``."""

    def __init__(
        self,
        channel: MessageChannel,
        registry: Registry,
        trust_of: Callable[[NodeId], TrustLevel],
        *,
        initiator: bool,
    ) -> None:
        """``initiator`` is True on the side that dialed: it picks the call-id parity."""
        self._channel = channel
        self._registry = registry
        self._trust_of = trust_of
        self._peer = channel.peer
        self._short = channel.peer.short()
        self._session = Session(initiator=initiator)
        self._outbox = Outbox(self._short)
        self._signals: dict[int, Signal] = {}
        self._handler_scopes: dict[int, trio.CancelScope] = {}
        self._overflowed: dict[int, ErrorResponse] = {}  # calls to answer busy
        #: Trust each running handler's capability requires, and the calls stopped
        #: because the caller's trust dropped below it (``enforce_trust``).
        self._handler_trust: dict[int, TrustLevel] = {}
        self._revoked: set[int] = set()
        self._running: dict[str, int] = {}
        self._nursery: trio.Nursery | None = None
        self._finished = trio.Event()
        self.close_reason: str | None = None
        self._violation: str | None = None  # the protocol violation that closed us
        self._counts = [0, 0, 0, 0]  # frames in, frames out, bytes in, bytes out
        install_describe(registry)

    @property
    def peer(self) -> NodeId:
        return self._peer

    @property
    def is_closed(self) -> bool:
        return self.close_reason is not None

    def stats(self) -> ConnectionStats:
        frames_in, frames_out, bytes_in, bytes_out = self._counts
        return ConnectionStats(
            frames_in=frames_in,
            frames_out=frames_out,
            bytes_in=bytes_in,
            bytes_out=bytes_out,
            handlers_running=len(self._handler_scopes),
            calls_open=len(self._signals) - len(self._handler_scopes),
            held_bytes=self._session.held_bytes,
        )

    # --- lifetime ---

    async def serve(
        self, *, task_status: trio.TaskStatus[Connection] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the connection until the channel closes, the peer breaks the protocol,
        ``aclose`` is called or this task is cancelled; then close the channel."""
        if self._nursery is not None:
            raise RuntimeError("a Connection is served once")
        if self.is_closed:  # closed before it started: nothing to run
            task_status.started(self)
            return
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._until_closed, self._read_loop)
                nursery.start_soon(self._until_closed, self._write_loop)
                task_status.started(self)
        finally:
            self._close("closed locally")
            with trio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
                await self._channel.aclose(self._violation)
            self._finished.set()

    async def wait_closed(self) -> None:
        """Return once ``serve`` has finished and the channel is closed."""
        await self._finished.wait()

    async def aclose(self) -> None:
        """Stop serving and wait until the channel is closed: pending calls fail with
        ``PeerUnavailable``, handlers are cancelled."""
        self._close("closed locally")
        if self._nursery is None:
            await self._channel.aclose()
            self._finished.set()
        await self._finished.wait()

    def _close(self, reason: str) -> None:
        if self.close_reason is not None:
            return
        self.close_reason = reason
        self._outbox.close(reason)
        for signal in self._signals.values():
            signal.fire()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def _until_closed(self, loop: Callable[[], Any]) -> None:
        try:
            await loop()
        except PeerUnavailable as exc:
            log.debug("connection to %s ended: %s", self._short, exc)
            self._close(exc.reason or "channel closed")
        except RemoteProtocolError as exc:
            self._violated(exc)

    def _violated(self, exc: RemoteProtocolError) -> None:
        log.warning("peer %s broke the bus protocol, closing: %s", self._short, exc)
        if self.close_reason is None:
            self._violation = str(exc)
        self._close(f"protocol violation: {exc}")

    async def _write_loop(self) -> None:
        while True:
            data = await self._outbox.get()
            await self._channel.send_message(data)
            self._counts[1] += 1
            self._counts[3] += data.nbytes

    async def _read_loop(self) -> None:
        while True:
            message = await self._channel.receive_message()
            self._counts[0] += 1
            self._counts[2] += len(message)
            frame = decode_frame(message)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s -> %s call %d", self._short, frame.TAG, frame.call_id)
            event = self._session.receive(frame, len(message))
            if event is not None:
                self._dispatch(event, len(message))

    def _dispatch(self, event: Event, size: int) -> None:
        match event:
            case CallRequested(request):
                self._on_request(request, size)
            case CallProgressed(call_id):
                self._wake(call_id)
            case CallCancelled(call_id):
                self._stop_handler(call_id)
            case CallOverflowed(error):
                log.debug("call %d from %s holds too much: busy", error.call_id, self._short)
                if error.call_id in self._handler_scopes:
                    # Sent once the handler is stopped, after any data it had queued.
                    self._overflowed[error.call_id] = error
                    self._stop_handler(error.call_id)
                else:
                    self._post(error)

    def _stop_handler(self, call_id: int) -> None:
        scope = self._handler_scopes.get(call_id)
        if scope is not None:
            scope.cancel()

    def _wake(self, call_id: int) -> None:
        signal = self._signals.get(call_id)
        if signal is not None:
            signal.fire()

    def _post(self, frame: Frame) -> None:
        """Queue a small frame without waiting (from the reader or a cancel path)."""
        try:
            self._outbox.put_nowait(encode(frame))
        except PeerUnavailable:
            pass  # the connection is over; nothing more goes out
        except RemoteProtocolError as exc:
            self._violated(exc)

    def _raise_if_closed(self) -> None:
        if self.close_reason is not None:
            raise PeerUnavailable(self._short, self.close_reason)

    # --- incoming calls ---

    def _on_request(self, request: Request, size: int) -> None:
        registration = self._registry.lookup(request.cap)
        trust = self._trust_of(self._peer)
        rejection = admit(
            None if registration is None else registration.descriptor,
            request.cap,
            request.version,
            trust,
            self._running.get(request.cap, 0),
        )
        if rejection is None and not self._session.can_hold(size):
            rejection = HELD_REJECTION
        if rejection is not None:
            log.debug("refused %s from %s: %s", request.cap, self._short, rejection.code)
            self._post(self._session.refuse(request, rejection.code, _clip(rejection.message)))
            return
        # admit() refuses unknown capabilities, and requests are read only while serving.
        assert registration is not None and self._nursery is not None
        self._session.accept(request, size)
        self._running[request.cap] = self._running.get(request.cap, 0) + 1
        scope = self._handler_scopes[request.call_id] = trio.CancelScope()
        self._handler_trust[request.call_id] = registration.descriptor.trust_required
        signal = self._signals[request.call_id] = Signal()
        context = _HandlerContext(self, request, trust, signal)
        self._nursery.start_soon(self._run_handler, registration, context, scope)

    def enforce_trust(self) -> int:
        """Stop the running handlers the peer's trust no longer admits (its level was
        just lowered): each answers ``unauthorized``. New calls are checked anyway, at
        admission. Returns how many handlers were stopped."""
        trust = self._trust_of(self._peer)
        stopped = [cid for cid, need in self._handler_trust.items() if trust < need]
        for call_id in stopped:
            self._revoked.add(call_id)
            self._handler_scopes[call_id].cancel()
        return len(stopped)

    async def _run_handler(
        self, registration: Registration, context: _HandlerContext, scope: trio.CancelScope
    ) -> None:
        call_id = context.call_id
        try:
            with scope:
                for data in await self._invoke(registration, context):
                    await self._outbox.put(data)
            if call_id in self._revoked and self._session.is_live(call_id):
                name = registration.descriptor.name
                answer = self._session.fail(call_id, "unauthorized", f"{name}: trust revoked")
                await self._outbox.put(encode(answer))
        except PeerUnavailable:
            pass  # the connection closed under the handler: nobody to answer
        finally:
            self._running[registration.descriptor.name] -= 1
            del self._handler_scopes[call_id]
            del self._handler_trust[call_id]
            self._revoked.discard(call_id)
            overflowed = self._overflowed.pop(call_id, None)
            if overflowed is not None:  # after whatever the handler queued
                self._post(overflowed)
            del self._signals[call_id]
            self._session.close_call(call_id)

    async def _invoke(
        self, registration: Registration, context: _HandlerContext
    ) -> list[memoryview]:
        """Run the handler under its timeout; the encoded frames that answer the call."""
        descriptor, call_id = registration.descriptor, context.call_id
        try:
            with trio.move_on_after(descriptor.timeout_seconds) as timer:
                try:
                    body = await registration.handler(context)
                except ExceptionGroup as group:
                    raise collapse(group) from None
            if not timer.cancelled_caught:
                return [encode(frame) for frame in self._session.respond(call_id, body)]
            answer = self._session.fail(
                call_id, "timeout", f"{descriptor.name} took over {descriptor.timeout_seconds} s"
            )
        except ServiceError as exc:
            answer = self._session.fail(call_id, exc.code, _clip(exc.detail))
        except PeerUnavailable:
            if self.is_closed:
                raise
            answer = self._session.fail(
                call_id, "unavailable", "a peer this call needs is unavailable"
            )
        except Exception:
            # The one broad catch around foreign code: the text stays in our log.
            log.exception("handler for %s failed on a call from %s", descriptor.name, self._short)
            answer = self._session.fail(call_id, "internal", INTERNAL_MESSAGE)
        return [encode(answer)]

    # --- outgoing calls ---

    async def call(
        self,
        cap: str,
        args: Any = None,
        *,
        version: tuple[int, int] = (1, 0),
        timeout_s: float | None = None,
    ) -> Any:
        """Call ``cap`` and return the ``res`` body. Raises ``ServiceError`` with the
        callee's code (``timeout`` too when ``timeout_s`` passes first, after which the
        call is cancelled) and ``PeerUnavailable`` if the connection goes."""
        if timeout_s is None:  # no cancel scope: it is a measurable cost per small call
            return await self._unary(cap, args, version)
        with trio.move_on_after(timeout_s):
            return await self._unary(cap, args, version)
        raise ServiceError("timeout", f"{cap}: no answer within {timeout_s} s")

    async def _unary(self, cap: str, args: Any, version: tuple[int, int]) -> Any:
        call_id, signal = await self._start_call(cap, args, version)
        try:
            return await self._outcome(call_id, signal)
        finally:
            self._finish_call(call_id)

    @asynccontextmanager
    async def open_call(
        self, cap: str, args: Any = None, *, version: tuple[int, int] = (1, 0)
    ) -> AsyncIterator[OutgoingCall]:
        """Open a call whose streams the block uses; leaving the block before the
        outcome arrived (or by an exception or cancellation) sends ``cancel``."""
        call_id, signal = await self._start_call(cap, args, version)
        try:
            yield OutgoingCall(self, call_id, signal)
        finally:
            self._finish_call(call_id)

    async def _start_call(
        self, cap: str, args: Any, version: tuple[int, int]
    ) -> tuple[int, Signal]:
        """Send a ``req``; the new call's id and wake-up signal."""
        self._raise_if_closed()
        if self._nursery is None:
            raise LocalProtocolError("a call before serve() started")
        # Ids must reach the wire in increasing order: allocate and queue in one step,
        # with no checkpoint between, after waiting for room.
        await self._outbox.reserve()
        request = self._session.open_call(cap, version, args)
        try:
            data = encode(request)
        except LocalProtocolError:
            self._outbox.unreserve()
            self._session.close_call(request.call_id)  # never sent: nothing to cancel
            raise
        self._outbox.put_reserved(data)
        signal = self._signals[request.call_id] = Signal()
        return request.call_id, signal

    def _finish_call(self, call_id: int) -> None:
        """Forget an outgoing call; ``cancel`` it if it had not finished."""
        del self._signals[call_id]
        cancel = self._session.close_call(call_id)
        if cancel is not None:
            self._post(cancel)

    # --- streams, shared by both roles ---

    async def _send_item(self, call_id: int, signal: Signal, item: Any) -> None:
        data = encode(Data(call_id, item))  # before spending credit: it may raise
        while not self._session.can_send(call_id):
            if not self._session.is_live(call_id):
                # A call the peer cancelled: its handler's scope is cancelled, and this
                # checkpoint lets that land instead of reporting a protocol error.
                await trio.lowlevel.checkpoint()
            self._raise_unsendable(call_id)
            await signal.wait()
        self._session.spend_credit(call_id)
        await self._outbox.put(data)

    def _raise_unsendable(self, call_id: int) -> None:
        outcome = self._session.outcome(call_id)
        if isinstance(outcome, ErrorResponse):
            raise ServiceError(outcome.code, outcome.msg)
        if outcome is not None or not self._session.is_live(call_id):
            raise LocalProtocolError(f"call {call_id} is answered: its stream is closed")
        self._raise_if_closed()
        if self._session.has_ended(call_id):
            raise LocalProtocolError(f"send after end on call {call_id}")

    async def _send_end(self, call_id: int) -> None:
        frame = self._session.end_stream(call_id)
        if frame is not None:
            await self._outbox.put(encode(frame))

    async def _next_item(self, call_id: int, signal: Signal) -> Any:
        """The peer's next item on this call, or ``Marker.END``."""
        while True:
            item, credit = self._session.next_item(call_id)
            if credit is not None:
                self._post(credit)
            if item is not Marker.EMPTY:
                break
            self._raise_if_closed()
            await signal.wait()
        outcome = self._session.outcome(call_id)
        if item is Marker.END and isinstance(outcome, ErrorResponse):
            raise ServiceError(outcome.code, outcome.msg)
        return item

    async def _outcome(self, call_id: int, signal: Signal) -> Any:
        while (outcome := self._session.outcome(call_id)) is None:
            self._raise_if_closed()
            await signal.wait()
        if isinstance(outcome, ErrorResponse):
            raise ServiceError(outcome.code, outcome.msg)
        return outcome.body


class _Items:
    """Async iterator over the peer's stream items of one call."""

    __slots__ = ("_call_id", "_conn", "_signal")

    def __init__(self, conn: Connection, call_id: int, signal: Signal) -> None:
        self._conn, self._call_id, self._signal = conn, call_id, signal

    def __aiter__(self) -> _Items:
        return self

    async def __anext__(self) -> Any:
        item = await self._conn._next_item(self._call_id, self._signal)
        if item is Marker.END:
            raise StopAsyncIteration
        return item


class OutgoingCall:
    """The caller's handle on one open call (see ``Connection.open_call``)."""

    __slots__ = ("_call_id", "_conn", "_signal")

    def __init__(self, conn: Connection, call_id: int, signal: Signal) -> None:
        self._conn, self._call_id, self._signal = conn, call_id, signal

    @property
    def call_id(self) -> int:
        return self._call_id

    async def send(self, item: Any) -> None:
        """Send one item to the callee, waiting for credit. Raises ``ServiceError`` if
        the callee already failed the call."""
        await self._conn._send_item(self._call_id, self._signal, item)

    async def send_end(self) -> None:
        """Tell the callee no more items follow."""
        await self._conn._send_end(self._call_id)

    def __aiter__(self) -> AsyncIterator[Any]:
        """The callee's items until its ``end``; raises ``ServiceError`` on ``err``.
        Read them before awaiting ``result`` -- the callee waits for credit."""
        return _Items(self._conn, self._call_id, self._signal)

    async def result(self) -> Any:
        """The ``res`` body; raises ``ServiceError`` on ``err``."""
        return await self._conn._outcome(self._call_id, self._signal)


class _HandlerContext:
    """``CallContext`` of one incoming call."""

    __slots__ = ("_conn", "_request", "_signal", "_trust")

    def __init__(
        self, conn: Connection, request: Request, trust: TrustLevel, signal: Signal
    ) -> None:
        self._conn, self._request, self._trust, self._signal = conn, request, trust, signal

    @property
    def call_id(self) -> int:
        return self._request.call_id

    @property
    def peer(self) -> NodeId:
        return self._conn.peer

    @property
    def trust(self) -> TrustLevel:
        return self._trust

    @property
    def args(self) -> Any:
        return self._request.args

    @property
    def version(self) -> tuple[int, int]:
        return self._request.version

    async def send(self, item: Any) -> None:
        await self._conn._send_item(self._request.call_id, self._signal, item)

    async def send_end(self) -> None:
        await self._conn._send_end(self._request.call_id)

    def incoming(self) -> AsyncIterator[Any]:
        return _Items(self._conn, self._request.call_id, self._signal)


def install_describe(registry: Registry) -> None:
    """Register ``bus.describe`` (open to strangers) unless the registry has it."""
    if DESCRIBE_CAP in registry:
        return

    async def describe(context: CallContext) -> list[dict[str, Any]]:
        return registry.describe(context.trust)

    registry.register(DESCRIBE_DESCRIPTOR, describe)
