"""The pure call table (hearthfile/bus/session.py), driven frame by frame."""

from __future__ import annotations

import pytest

from hearthfile.bus.frames import (
    Cancel,
    Credit,
    Data,
    End,
    ErrorResponse,
    Frame,
    Request,
    Response,
)
from hearthfile.bus.session import (
    CREDIT_BATCH,
    INITIAL_WINDOW,
    CallCancelled,
    CallProgressed,
    CallRequested,
    HeldBytes,
    Marker,
    Session,
)
from hearthfile.errors import LocalProtocolError, RemoteProtocolError


def violates(session: Session, frame: Frame, reason: str) -> None:
    with pytest.raises(RemoteProtocolError, match=reason):
        session.receive(frame)


def test_ids_have_the_parity_of_the_side_that_opens() -> None:
    dialer, acceptor = Session(initiator=True), Session(initiator=False)
    assert [dialer.open_call("a.b", (1, 0), None).call_id for _ in range(3)] == [1, 3, 5]
    assert [acceptor.open_call("a.b", (1, 0), None).call_id for _ in range(3)] == [2, 4, 6]


def test_requests_must_use_the_peer_parity_and_increase() -> None:
    session = Session(initiator=True)
    assert session.receive(Request(4, "a.b", (1, 0), None)) == CallRequested(
        Request(4, "a.b", (1, 0), None)
    )
    violates(session, Request(3, "a.b", (1, 0), None), "out of sequence")
    violates(session, Request(2, "a.b", (1, 0), None), "out of sequence")
    violates(session, Request(4, "a.b", (1, 0), None), "out of sequence")
    assert isinstance(session.receive(Request(10, "a.b", (1, 0), None)), CallRequested)


def test_frames_for_never_opened_calls_are_violations() -> None:
    session = Session(initiator=True)
    violates(session, Data(2, 0), "never opened")
    violates(session, Response(1, None), "never opened")
    violates(session, Credit(7, 1), "never opened")


def test_outcomes_only_for_our_calls_and_cancels_only_for_theirs() -> None:
    session = Session(initiator=True)
    session.receive(Request(2, "a.b", (1, 0), None))
    violates(session, Response(2, None), "did not open")
    session.open_call("a.b", (1, 0), None)
    violates(session, Cancel(1), "did not open")


def test_late_frames_for_finished_calls_are_dropped() -> None:
    session = Session(initiator=True)
    request = session.open_call("a.b", (1, 0), None)
    assert session.close_call(request.call_id) == Cancel(request.call_id)
    late: list[Frame] = [Data(1, 0), End(1), Credit(1, 2), Response(1, None)]
    for frame in late:
        assert session.receive(frame) is None
    session.receive(Request(2, "a.b", (1, 0), None))
    session.refuse(Request(2, "a.b", (1, 0), None), "busy", "")
    late = [Data(2, 0), End(2), Cancel(2)]
    for frame in late:
        assert session.receive(frame) is None


def test_unary_call_round_trip() -> None:
    caller, callee = Session(initiator=True), Session(initiator=False)
    request = caller.open_call("a.b", (1, 0), {"x": 1})
    event = callee.receive(request)
    assert isinstance(event, CallRequested)
    callee.accept(event.request)
    answer = callee.respond(request.call_id, "ok")
    assert answer == [Response(1, "ok")]
    assert caller.receive(answer[0]) == CallProgressed(1)
    assert caller.outcome(1) == Response(1, "ok")
    assert caller.next_item(1) == (Marker.END, None)
    assert caller.close_call(1) is None  # finished: nothing to cancel
    assert not callee.is_live(1)


def test_streaming_callee_ends_before_responding() -> None:
    callee = Session(initiator=False)
    callee.receive(Request(1, "a.b", (1, 0), None))
    callee.accept(Request(1, "a.b", (1, 0), None))
    callee.spend_credit(1)
    assert callee.respond(1, None) == [End(1), Response(1, None)]


def test_res_after_data_without_end_is_a_violation() -> None:
    caller = Session(initiator=True)
    caller.open_call("a.b", (1, 0), None)
    caller.receive(Data(1, "x"))
    violates(caller, Response(1, None), "before end")


def test_err_may_interrupt_a_stream() -> None:
    caller = Session(initiator=True)
    caller.open_call("a.b", (1, 0), None)
    caller.receive(Data(1, "x"))
    caller.receive(ErrorResponse(1, "internal", ""))
    assert caller.next_item(1) == ("x", None)
    assert caller.next_item(1) == (Marker.END, None)
    violates(caller, Data(1, "y"), "after the outcome")
    violates(caller, ErrorResponse(1, "internal", ""), "second terminal")


def test_receiver_allows_the_window_then_needs_credit() -> None:
    callee = Session(initiator=False)
    callee.receive(Request(1, "a.b", (1, 0), None))
    callee.accept(Request(1, "a.b", (1, 0), None))
    for i in range(INITIAL_WINDOW):
        assert callee.receive(Data(1, i)) == CallProgressed(1)
    violates(callee, Data(1, "one too many"), "beyond granted credit")


def test_consuming_grants_credit_in_batches() -> None:
    callee = Session(initiator=False)
    callee.receive(Request(1, "a.b", (1, 0), None))
    callee.accept(Request(1, "a.b", (1, 0), None))
    for i in range(INITIAL_WINDOW):
        callee.receive(Data(1, i))
    grants = [callee.next_item(1)[1] for _ in range(INITIAL_WINDOW)]
    assert [g for g in grants if g is not None] == [Credit(1, CREDIT_BATCH)] * (
        INITIAL_WINDOW // CREDIT_BATCH
    )
    assert callee.next_item(1) == (Marker.EMPTY, None)
    for i in range(INITIAL_WINDOW):  # the window is whole again
        callee.receive(Data(1, i))


def test_sender_spends_credit_and_regains_it() -> None:
    caller = Session(initiator=True)
    caller.open_call("a.b", (1, 0), None)
    for _ in range(INITIAL_WINDOW):
        caller.spend_credit(1)
    assert not caller.can_send(1)
    with pytest.raises(LocalProtocolError):
        caller.spend_credit(1)
    caller.receive(Credit(1, 2))
    assert caller.can_send(1)


def test_end_closes_one_direction_once() -> None:
    caller = Session(initiator=True)
    caller.open_call("a.b", (1, 0), None)
    assert caller.end_stream(1) == End(1)
    assert caller.end_stream(1) is None
    assert not caller.can_send(1) and caller.has_ended(1)
    caller.receive(End(1))
    violates(caller, End(1), "second end")
    violates(caller, Data(1, 0), "after end")


def test_cancel_from_the_caller_drops_the_call() -> None:
    callee = Session(initiator=False)
    callee.receive(Request(1, "a.b", (1, 0), None))
    callee.accept(Request(1, "a.b", (1, 0), None))
    assert callee.receive(Cancel(1)) == CallCancelled(1)
    assert not callee.is_live(1)
    assert callee.receive(Cancel(1)) is None
    # The handler finished in the same instant: its answer goes nowhere, without error.
    assert callee.respond(1, {"late": True}) == []


def test_what_all_connections_hold_together_is_bounded() -> None:
    shared = HeldBytes(limit=1000)
    one = Session(initiator=True, shared=shared)
    two = Session(initiator=True, shared=shared)
    one.accept(Request(2, "a.b", (1, 0), None), size=600)
    assert two.can_hold(400) and not two.can_hold(401)
    assert one.can_hold(400)  # its own bound is far away; the node's is not
    one.fail(2, "internal", "done")
    assert shared.used == 0 and two.can_hold(1000)
