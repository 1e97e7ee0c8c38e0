"""The trust book: who this node trusts, at which level, and why (pure).

Two sources, later wins:

1. ``trust:`` in config.yaml, the operator's declarations (read-only here: a program
   never rewrites the operator's commented file);
2. grants made while the node lives: ``hearthfile trust``, an accepted invite, a
   verified introduction. These are kept through a ``GrantStore`` (trust/storage.py)
   and win over config.yaml for the same NodeID, being the more recent decision.

A peer with no entry is a ``stranger``, or a ``member`` when the config opens
membership. The node's own key is always ``self`` and can be granted nothing.

The book does no I/O itself and reads no clock: changes take ``now`` and go through
the store it was given, and each change returns a ``TrustChange`` the node applies
to live connections (a level that drops takes access away at once).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Final, Literal, Protocol

from hearthfile.errors import HearthError
from hearthfile.identity import NodeId
from hearthfile.trust.levels import TrustLevel

#: How an entry came to be: config.yaml, a local ``trust`` command, our invite (the
#: joiner, on the inviter's side), joined (the inviter, on the joiner's side: it is
#: taken as an introducer), or an introduction signed by ``introducer``.
Source = Literal["config", "local", "invite", "joined", "introduction"]
SOURCES: Final = ("config", "local", "invite", "joined", "introduction")


class TrustError(HearthError):
    """A trust change that cannot be made (own id, a config.yaml entry, bad level)."""


@dataclass(frozen=True, slots=True)
class TrustEntry:
    """One peer's standing. ``introducer`` is set for ``introduction`` entries and for
    the inviter a node joined through (it may introduce others)."""

    node: NodeId
    level: TrustLevel
    source: Source
    since: float
    introducer: NodeId | None = None
    #: Where to reach the peer after a restart: the inviter's address a join used.
    address: str | None = None


@dataclass(frozen=True, slots=True)
class TrustChange:
    """``node``'s level went from ``before`` to ``after`` (possibly equal, when only the
    entry's provenance changed)."""

    node: NodeId
    before: TrustLevel
    after: TrustLevel

    @property
    def lowered(self) -> bool:
        return self.after < self.before

    @property
    def raised(self) -> bool:
        return self.after > self.before


class GrantStore(Protocol):
    """Where granted entries are kept (``TrustFile`` in trust/storage.py)."""

    def save(self, entries: list[TrustEntry]) -> None: ...


class TrustBook:
    """Trust levels by NodeID, from config.yaml and from grants; changeable while running."""

    def __init__(
        self,
        me: NodeId,
        *,
        declared: Mapping[NodeId, TrustLevel] | None = None,
        granted: Iterable[TrustEntry] = (),
        open_membership: bool = False,
        store: GrantStore | None = None,
    ) -> None:
        self.me = me
        self._declared = {
            node: TrustEntry(node, level, "config", 0.0)
            for node, level in (declared or {}).items()
            if node != me
        }
        self._granted = {e.node: e for e in granted if e.node != me}
        self._default = TrustLevel.MEMBER if open_membership else TrustLevel.STRANGER
        self._store = store

    def level(self, node: NodeId) -> TrustLevel:
        """The bus's lookup: asked at every request, so changes apply at once."""
        if node == self.me:
            return TrustLevel.SELF
        entry = self.entry(node)
        return entry.level if entry is not None else self._default

    def entry(self, node: NodeId) -> TrustEntry | None:
        return self._granted.get(node) or self._declared.get(node)

    def entries(self) -> list[TrustEntry]:
        """Every peer trusted at member or above, sorted by NodeID (what ``trusted``
        lists); blocked peers (``revoke(block=True)``) are left out."""
        merged = {**self._declared, **self._granted}
        return [merged[n] for n in sorted(merged, key=str) if merged[n].level > TrustLevel.STRANGER]

    def grant(
        self,
        node: NodeId,
        level: TrustLevel,
        *,
        now: float,
        source: Source = "local",
        introducer: NodeId | None = None,
        address: str | None = None,
    ) -> TrustChange:
        """Trust ``node`` at ``level`` (member or trusted) and keep it."""
        if node == self.me:
            raise TrustError("a node cannot be granted trust in itself")
        if level not in (TrustLevel.MEMBER, TrustLevel.TRUSTED):
            raise TrustError(f"only member or trusted can be granted, not {level.label}")
        before = self.level(node)
        old = self._granted.get(node)
        if old is not None and old.level == level and old.source == source:
            entry = replace(old, introducer=introducer, address=address or old.address)
        else:
            entry = TrustEntry(node, level, source, now, introducer, address)
        self._granted[node] = entry
        self._save()
        return TrustChange(node, before, level)

    def revoke(self, node: NodeId, *, block: bool = False, now: float = 0.0) -> TrustChange:
        """Take back a grant. ``block`` (an operator's ``untrust``) also keeps introductions
        from granting it again, until a later ``trust``. A peer declared in config.yaml
        stays until removed there."""
        if node == self.me:
            raise TrustError("a node cannot untrust itself")
        if node in self._declared and self._declared[node].level > self._default:
            raise TrustError(f"{node} is trusted in config.yaml's trust section: remove it there")
        before = self.level(node)
        if block:
            self._granted[node] = TrustEntry(node, TrustLevel.STRANGER, "local", now)
            self._save()
        elif self._granted.pop(node, None) is not None:
            self._save()
        return TrustChange(node, before, self.level(node))

    def _save(self) -> None:
        if self._store is not None:
            self._store.save(sorted(self._granted.values(), key=lambda e: str(e.node)))
