"""Stoppable blocking work (hearthfile/services/threads.py)."""

from __future__ import annotations

import threading

import pytest
import trio

from hearthfile.services.threads import Stop, Stopped, run_stoppable


async def test_the_result_comes_back() -> None:
    with trio.fail_after(10):
        assert await run_stoppable(lambda stop: 42) == 42


async def test_cancelling_the_caller_stops_the_work() -> None:
    started, ended = threading.Event(), threading.Event()
    outcome: list[str] = []

    def endless(stop: Stop) -> None:
        started.set()
        try:
            while True:
                stop.check()
        except Stopped:
            outcome.append("stopped")
            raise
        finally:
            ended.set()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_stoppable, endless)
            await trio.to_thread.run_sync(started.wait)
            nursery.cancel_scope.cancel()
    assert ended.is_set(), "the caller returned only once the thread had ended"
    assert outcome == ["stopped"]


async def test_errors_of_the_work_reach_the_caller() -> None:
    def broken(stop: Stop) -> None:
        raise ValueError("no")

    with trio.fail_after(10), pytest.raises(ValueError):
        await run_stoppable(broken)
