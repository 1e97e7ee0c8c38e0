"""Blocking work in a worker thread that stops when its caller goes away (trio shell).

``trio.to_thread.run_sync`` cannot interrupt a thread: a handler cancelled while
its thread hashes ``/dev/zero`` would wait forever, and so would the daemon's
shutdown. ``run_stoppable`` hands the work a ``Stop`` to check between steps (a
chunk, a file); when the caller is cancelled (the client went away, SIGTERM) the
stop is raised and the thread ends at its next check. The caller waits at most
``STOP_WAIT_S`` for that: a thread stuck in a system call that never returns
(opening a FIFO with no writer) is left behind rather than holding the node.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar

import trio

from hearthfile.errors import HearthError

STOP_WAIT_S: Final = 5.0

T = TypeVar("T")


class Stopped(HearthError):
    """The caller of a stoppable operation went away; the work was abandoned."""


class Stop:
    """What the blocking work checks between steps."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def check(self) -> None:
        if self._event.is_set():
            raise Stopped("the caller went away")

    def per_file(self, path: Path, size: int) -> Callable[[int], None]:
        """A progress callback (``ops.add_paths``'s ``progress_for``) that checks."""
        return lambda nbytes: self.check()


async def run_stoppable(work: Callable[[Stop], T]) -> T:
    """``work(stop)`` in a worker thread; cancelling the caller stops it."""
    stop = Stop()
    finished = threading.Event()

    def run() -> T:
        try:
            return work(stop)
        finally:
            finished.set()

    try:
        return await trio.to_thread.run_sync(run, abandon_on_cancel=True)
    finally:
        if not finished.is_set():
            stop.set()
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(finished.wait, STOP_WAIT_S)
