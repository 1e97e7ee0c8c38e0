"""The trust book's grants on disk: ``<home>/trust.json`` (file I/O, no trio).

Written whole (temp file, fsync, rename, directory fsync), so a crash leaves the old
or the new version. A ``trust.yaml`` left by an older version (NodeID -> level) is
read once when no trust.json exists yet, and renamed ``trust.yaml.migrated`` once its
entries are saved here, so a later ``untrust`` is not undone by the old file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

from hearthfile.config import ConfigError, load_trust
from hearthfile.identity import NodeId
from hearthfile.trust.book import SOURCES, TrustBook, TrustEntry, TrustError
from hearthfile.trust.introductions import IntroBook, Introduction, Sign
from hearthfile.trust.invites import Invite, InviteBook
from hearthfile.trust.levels import TrustLevel

TRUST_FILE: Final = "trust.json"
INVITES_FILE: Final = "invites.json"
INTROS_FILE: Final = "introductions.json"
LEGACY_FILE: Final = "trust.yaml"
FORMAT_VERSION: Final = 1
T = TypeVar("T")


class TrustFile:
    """Load and save the grants of one home (a ``GrantStore``)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = home / TRUST_FILE

    def load(self) -> list[TrustEntry]:
        """The saved grants; raises ``TrustError`` naming the file when it is damaged."""
        if not self.path.exists():
            return self._load_legacy()
        return _load_rows(self.path, "peers", "trust", _entry)

    def save(self, entries: list[TrustEntry]) -> None:
        _save_rows(self.path, "peers", [_plain(e) for e in entries], indent=1)
        legacy = self.home / LEGACY_FILE
        if legacy.exists():
            legacy.replace(legacy.with_name(LEGACY_FILE + ".migrated"))

    def _load_legacy(self) -> list[TrustEntry]:
        try:
            levels = load_trust(self.home)
        except ConfigError as exc:
            raise TrustError(str(exc)) from None
        return [
            TrustEntry(NodeId.parse(node), TrustLevel.parse(level), "local", 0.0)
            for node, level in sorted(levels.items())
        ]


class InviteFile:
    """The open invites of one home (an ``InviteStore``): ids and keys derived from
    the secrets, never the secrets; readable by the node's user only."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = home / INVITES_FILE

    def load(self) -> list[Invite]:
        if not self.path.exists():
            return []
        return _load_rows(self.path, "invites", "invite", _invite)

    def save(self, invites: list[Invite]) -> None:
        rows = [
            {
                "id": i.invite_id.hex(),
                "key": i.join_key.hex(),
                "level": i.level.label,
                "expires_at": i.expires_at,
                "uses_left": i.uses_left,
                "created_at": i.created_at,
            }
            for i in invites
        ]
        _save_rows(self.path, "invites", rows)


def _invite(row: dict[str, Any]) -> Invite:
    return Invite(
        bytes.fromhex(row["id"]),
        bytes.fromhex(row["key"]),
        TrustLevel.parse_grantable(row["level"]),
        int(row["expires_at"]),
        int(row["uses_left"]),
        float(row["created_at"]),
    )


def open_invites(home: Path) -> InviteBook:
    store = InviteFile(home)
    return InviteBook(store.load(), store)


class IntroFile:
    """The introductions a node holds and relays (signed records, verified on load)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = home / INTROS_FILE

    def load(self) -> list[Introduction]:
        if not self.path.exists():
            return []
        records = _load_rows(self.path, "records", "introductions", _introduction)
        return [r for r in records if r.verify()]

    def save(self, records: list[Introduction]) -> None:
        rows = [
            {
                "introducer": str(r.introducer),
                "subject": str(r.subject),
                "level": r.level,
                "seq": r.seq,
                "timestamp_ms": r.timestamp_ms,
                "signature": r.signature.hex(),
            }
            for r in records
        ]
        _save_rows(self.path, "records", rows)


def _introduction(row: dict[str, Any]) -> Introduction:
    return Introduction(
        NodeId.parse(row["introducer"]),
        NodeId.parse(row["subject"]),
        int(row["level"]),
        int(row["seq"]),
        int(row["timestamp_ms"]),
        bytes.fromhex(row["signature"]),
    )


def _load_rows(path: Path, key: str, kind: str, parse: Callable[[Any], T]) -> list[T]:
    """The ``key`` rows of a versioned JSON file, each through ``parse``; a damaged
    file raises ``TrustError`` naming it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"unknown version {data.get('version')!r}")
        return [parse(row) for row in data[key]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise TrustError(f"{path}: unreadable {kind} file: {exc}") from None


def _save_rows(path: Path, key: str, rows: list[Any], indent: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps({"version": FORMAT_VERSION, key: rows}, indent=indent) + "\n")


def open_intros(home: Path, me: NodeId, sign: Sign) -> IntroBook:
    return IntroBook(me, sign, IntroFile(home).load())


def _plain(e: TrustEntry) -> dict[str, Any]:
    return {
        "node_id": str(e.node),
        "level": e.level.label,
        "source": e.source,
        "since": e.since,
        "introducer": None if e.introducer is None else str(e.introducer),
        "address": e.address,
    }


def _entry(item: dict[str, Any]) -> TrustEntry:
    source = item["source"]
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}")
    introducer, address = item.get("introducer"), item.get("address")
    if address is not None and not isinstance(address, str):
        raise ValueError("address must be text")
    return TrustEntry(
        NodeId.parse(item["node_id"]),
        _stored_level(item["level"]),
        source,
        float(item["since"]),
        None if introducer is None else NodeId.parse(introducer),
        address,
    )


def _stored_level(text: str) -> TrustLevel:
    level = TrustLevel.parse(text)
    if level is TrustLevel.SELF:
        raise ValueError("level self cannot be stored")
    return level


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` durably: a crash leaves the old or the new file."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:  # mkstemp makes the file 0600: invites and trust are the node user's alone
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def open_book(
    home: Path,
    me: NodeId,
    declared: tuple[tuple[str, str], ...] = (),
    *,
    open_membership: bool = False,
) -> TrustBook:
    """The home's trust book: config.yaml's ``trust`` pairs plus the saved grants."""
    levels = {NodeId.parse(node): TrustLevel.parse_grantable(level) for node, level in declared}
    store = TrustFile(home)
    return TrustBook(
        me, declared=levels, granted=store.load(), open_membership=open_membership, store=store
    )
