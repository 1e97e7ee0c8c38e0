"""Capabilities: what a node offers on the bus, who may call it, and admission (pure).

This module owns the ``CapabilityDescriptor`` (DESIGN.md section 4), the ``Registry``
of handlers a node serves, and the admission rule that decides, for one incoming
``req``, whether a handler runs or which wire error answers instead.
It does no I/O and imports no trio: handlers are plain async callables, and the
``CallContext`` they receive is described here as a Protocol and implemented by
``hearthfile.bus.connection``.

Admission checks run in this order, the first failure answering the request:

1. unknown capability            -> ``not_found``
2. caller's trust below required -> ``unauthorized``
3. major version differs         -> ``bad_request`` (any minor of the same major is served;
   a handler may look at ``ctx.version`` to adapt)
4. calls already running on this connection >= ``max_concurrent`` -> ``busy``

``TrustLevel`` itself lives in hearthfile/trust/levels.py (re-exported here for the
bus's users). The level is asked of the node's ``TrustOf`` lookup at each request, so
a changed level applies to the next call without reconnecting.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from hearthfile.bus.frames import MAX_CAP_BYTES, MAX_VERSION_PART
from hearthfile.identity import NodeId
from hearthfile.trust.levels import TrustLevel

__all__ = [
    "DESCRIBE_CAP",
    "DESCRIBE_DESCRIPTOR",
    "CallContext",
    "CapabilityDescriptor",
    "Handler",
    "Registration",
    "Registry",
    "Rejection",
    "TrustLevel",
    "TrustOf",
    "admit",
]

#: The capability every connection answers, even for strangers (DESIGN.md section 4).
DESCRIBE_CAP: Final = "bus.describe"

#: Lowercase dotted words: ``file.read``, ``gossip.exchange``.
_CAP_NAME: Final = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")

STABILITIES: Final = frozenset({"experimental", "stable", "deprecated"})


#: The bus's trust lookup: asked at every request, so a changed level applies to the
#: next call (hearthfile/trust/ supplies it; the bus only compares levels).
TrustOf = Callable[[NodeId], TrustLevel]


class CallContext(Protocol):
    """What a handler sees of one incoming call (implemented by the connection)."""

    @property
    def peer(self) -> NodeId:
        """The caller, proven by the handshake."""
        ...

    @property
    def trust(self) -> TrustLevel:
        """The caller's trust level when the call was admitted."""
        ...

    @property
    def args(self) -> Any:
        """The request's ``args``, as decoded msgpack: validate before use."""
        ...

    @property
    def version(self) -> tuple[int, int]:
        """The version the caller asked for (same major as ours, any minor)."""
        ...

    async def send(self, item: Any) -> None:
        """Send one stream item; waits while the caller has granted no credit."""
        ...

    async def send_end(self) -> None:
        """End our stream early, before the call's answer (e.g. to then read the caller's)."""
        ...

    def incoming(self) -> AsyncIterator[Any]:
        """The caller's stream items, until the caller's ``end``."""
        ...


#: A handler's return value becomes the ``res`` body; ``ServiceError`` becomes ``err``.
Handler = Callable[[CallContext], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class CapabilityDescriptor:
    """A capability's contract. Schemas are informational plain-dict descriptions."""

    name: str
    version: tuple[int, int]
    trust_required: TrustLevel
    max_concurrent: int
    timeout_seconds: float
    idempotent: bool = False
    stability: str = "stable"
    request_schema: Mapping[str, Any] = field(default_factory=dict)
    response_schema: Mapping[str, Any] = field(default_factory=dict)
    stream_schema: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        problem = _descriptor_problem(self)
        if problem is not None:
            raise ValueError(f"capability {self.name!r}: {problem}")

    def describe(self) -> dict[str, Any]:
        """The plain-dict form listed by ``bus.describe``."""
        return {
            "name": self.name,
            "version": [self.version[0], self.version[1]],
            "stability": self.stability,
            "trust_required": self.trust_required.label,
            "max_concurrent": self.max_concurrent,
            "timeout_seconds": float(self.timeout_seconds),  # always a float on the wire
            "idempotent": self.idempotent,
            "request_schema": dict(self.request_schema),
            "response_schema": dict(self.response_schema),
            "stream_schema": None if self.stream_schema is None else dict(self.stream_schema),
        }


def _descriptor_problem(d: CapabilityDescriptor) -> str | None:
    if len(d.name.encode()) > MAX_CAP_BYTES or not _CAP_NAME.fullmatch(d.name):
        return "name must be lowercase dotted words, e.g. 'file.read'"
    if len(d.version) != 2 or not all(0 <= part <= MAX_VERSION_PART for part in d.version):
        return "version must be (major, minor) with parts 0..65535"
    if d.stability not in STABILITIES:
        return f"stability must be one of {sorted(STABILITIES)}"
    if d.max_concurrent < 1:
        return "max_concurrent must be at least 1"
    if not d.timeout_seconds > 0:
        return "timeout_seconds must be positive"
    return None


@dataclass(frozen=True, slots=True)
class Registration:
    """A descriptor and the handler that serves it."""

    descriptor: CapabilityDescriptor
    handler: Handler


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a request is answered with an error instead of running its handler."""

    code: str
    message: str


class Registry:
    """The capabilities this node serves, by name. Filled at start-up, read per request."""

    def __init__(self) -> None:
        self._entries: dict[str, Registration] = {}

    def register(self, descriptor: CapabilityDescriptor, handler: Handler) -> None:
        """Add a capability; a name can be registered once."""
        if descriptor.name in self._entries:
            raise ValueError(f"capability {descriptor.name!r} is already registered")
        self._entries[descriptor.name] = Registration(descriptor, handler)

    def lookup(self, name: str) -> Registration | None:
        return self._entries.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def describe(self, trust: TrustLevel = TrustLevel.SELF) -> list[dict[str, Any]]:
        """Every capability a caller of ``trust`` may call, as a plain dict, sorted by
        name: the ``bus.describe`` body (a stranger is not shown what it cannot call)."""
        return [
            self._entries[name].descriptor.describe()
            for name in sorted(self._entries)
            if self._entries[name].descriptor.trust_required <= trust
        ]


def admit(
    descriptor: CapabilityDescriptor | None,
    cap: str,
    version: tuple[int, int],
    trust: TrustLevel,
    in_flight: int,
) -> Rejection | None:
    """Decide one request: None to run the handler, else the error to answer with."""
    if descriptor is None:
        return Rejection("not_found", f"no capability {cap!r} here")
    if trust < descriptor.trust_required:
        return Rejection(
            "unauthorized",
            f"{cap} requires trust {descriptor.trust_required.label}, caller is {trust.label}",
        )
    if version[0] != descriptor.version[0]:
        ours = f"{descriptor.version[0]}.{descriptor.version[1]}"
        return Rejection(
            "bad_request",
            f"{cap} version {version[0]}.{version[1]} requested, this node serves {ours}; "
            "major versions differ",
        )
    if in_flight >= descriptor.max_concurrent:
        return Rejection("busy", f"{cap} already runs {descriptor.max_concurrent} calls")
    return None


#: ``bus.describe``: open to strangers, answered by every connection from its registry.
DESCRIBE_DESCRIPTOR: Final = CapabilityDescriptor(
    name=DESCRIBE_CAP,
    version=(1, 0),
    trust_required=TrustLevel.STRANGER,
    max_concurrent=2,
    timeout_seconds=5.0,
    idempotent=True,
    request_schema={"type": "nil"},
    response_schema={"type": "array", "items": "capability descriptor map"},
)
