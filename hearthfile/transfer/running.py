"""The fetches under way: shared, listed and cancellable (trio shell)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from hearthfile.blobs.chunker import Manifest
from hearthfile.cids import Cid
from hearthfile.errors import ServiceError
from hearthfile.transfer.peer import Progress, ProgressFn


@dataclass(slots=True)
class _Running:
    progress: Progress
    scope: trio.CancelScope
    done: trio.Event
    outcome: Manifest | BaseException | None = None
    watchers: list[ProgressFn] = field(default_factory=list)


Span = tuple[int, int] | None


class Transfers:
    """The fetches under way: listed by ``hearthfile transfers``, cancellable, and
    shared: a second request for the same blob (and byte span) waits for the first."""

    def __init__(self) -> None:
        self._running: dict[tuple[Cid, Span], _Running] = {}

    def snapshot(self) -> list[Progress]:
        return [r.progress for r in self._running.values()]

    def cancel(self, cid: Cid) -> bool:
        """Cancel every fetch of ``cid``; False when none runs."""
        hits = [r for (c, _), r in self._running.items() if c == cid]
        for running in hits:
            running.scope.cancel()
        return bool(hits)

    async def run(
        self,
        cid: Cid,
        span: Span,
        job: Callable[[ProgressFn], Awaitable[Manifest]],
        progress: ProgressFn | None = None,
    ) -> Manifest:
        running = self._running.get((cid, span))
        if running is None:
            return await self._lead((cid, span), job, progress)
        if progress is not None:
            running.watchers.append(progress)
        await running.done.wait()
        if isinstance(running.outcome, BaseException):
            raise ServiceError("unavailable", f"{cid}: the fetch this joined failed")
        assert running.outcome is not None
        return running.outcome

    async def _lead(
        self,
        key: tuple[Cid, Span],
        job: Callable[[ProgressFn], Awaitable[Manifest]],
        progress: ProgressFn | None,
    ) -> Manifest:
        cid = key[0]
        running = _Running(Progress(cid), trio.CancelScope(), trio.Event())
        if progress is not None:
            running.watchers.append(progress)

        def report(p: Progress) -> None:
            running.progress = p
            for watcher in running.watchers:
                watcher(p)

        self._running[key] = running
        try:
            with running.scope:
                running.outcome = await job(report)
                return running.outcome
            raise ServiceError("unavailable", f"{cid}: fetch cancelled")
        except BaseException as exc:
            running.outcome = exc
            raise
        finally:
            del self._running[key]
            running.done.set()
