"""The error taxonomy shared by every layer (pure).

One root, ``HearthError``. Wire errors carry a code from the closed set of
DESIGN.md section 4; anything a handler raises that is not a ``ServiceError``
goes out as ``internal`` and its text never leaves the host.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

#: The closed set of error codes that may appear on the wire (DESIGN.md section 4).
WIRE_ERROR_CODES: Final = frozenset(
    {
        "not_found",
        "bad_request",
        "unauthorized",
        "busy",
        "timeout",
        "capacity_exceeded",
        "unavailable",
        "partition",
        "internal",
    }
)


class HearthError(Exception):
    """Root of every error hearthfile raises on purpose."""


class ServiceError(HearthError):
    """A call failed with a wire error code; raised by handlers, re-raised at callers."""

    def __init__(self, code: str, detail: str = "") -> None:
        if code not in WIRE_ERROR_CODES:
            raise ValueError(f"unknown wire error code {code!r}")
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


class RemoteProtocolError(HearthError):
    """The peer sent bytes that break the protocol (normal on a network: close that peer)."""


class LocalProtocolError(HearthError):
    """We were about to break the protocol ourselves: a bug."""


class PeerUnavailable(HearthError):
    """The connection to a peer is gone or could not be made."""

    def __init__(self, peer: str, reason: str = "") -> None:
        super().__init__(f"peer {peer} unavailable" + (f": {reason}" if reason else ""))
        self.peer = peer
        self.reason = reason


def collapse(group: ExceptionGroup[Exception]) -> Exception:
    """The error a nursery's group stands for, so it reaches the user as itself.

    A ``ServiceError`` raised in a task (or a peer lost while reporting progress)
    arrives wrapped in an ``ExceptionGroup``; when every leaf is one of our own
    errors, the first ``ServiceError`` (else the first leaf) is what happened.
    Any other leaf is a bug: the group is returned whole, to be logged.
    """
    leaves = list(_leaves(group))
    ours = [e for e in leaves if isinstance(e, HearthError)]
    if not ours or len(ours) != len(leaves):
        return group
    return next((e for e in ours if isinstance(e, ServiceError)), ours[0])


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc
