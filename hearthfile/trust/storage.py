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
from pathlib import Path
from typing import Any, Final

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


class TrustFile:
    """Load and save the grants of one home (a ``GrantStore``)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = home / TRUST_FILE

    def load(self) -> list[TrustEntry]:
        """The saved grants; raises ``TrustError`` naming the file when it is damaged."""
        if not self.path.exists():
            return self._load_legacy()
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("version") != FORMAT_VERSION:
                raise ValueError(f"unknown version {data.get('version')!r}")
            return [_entry(item) for item in data["peers"]]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TrustError(f"{self.path}: unreadable trust file: {exc}") from None

    def save(self, entries: list[TrustEntry]) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        text = json.dumps(
            {"version": FORMAT_VERSION, "peers": [_plain(e) for e in entries]}, indent=1
        )
        write_atomic(self.path, text + "\n")
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
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("version") != FORMAT_VERSION:
                raise ValueError(f"unknown version {data.get('version')!r}")
            return [
                Invite(
                    bytes.fromhex(i["id"]),
                    bytes.fromhex(i["key"]),
                    TrustLevel.parse_grantable(i["level"]),
                    int(i["expires_at"]),
                    int(i["uses_left"]),
                    float(i["created_at"]),
                )
                for i in data["invites"]
            ]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TrustError(f"{self.path}: unreadable invite file: {exc}") from None

    def save(self, invites: list[Invite]) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
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
        write_atomic(self.path, json.dumps({"version": FORMAT_VERSION, "invites": rows}) + "\n")


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
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("version") != FORMAT_VERSION:
                raise ValueError(f"unknown version {data.get('version')!r}")
            records = [
                Introduction(
                    NodeId.parse(r["introducer"]),
                    NodeId.parse(r["subject"]),
                    int(r["level"]),
                    int(r["seq"]),
                    int(r["timestamp_ms"]),
                    bytes.fromhex(r["signature"]),
                )
                for r in data["records"]
            ]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TrustError(f"{self.path}: unreadable introductions file: {exc}") from None
        return [r for r in records if r.verify()]

    def save(self, records: list[Introduction]) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
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
        write_atomic(self.path, json.dumps({"version": FORMAT_VERSION, "records": rows}) + "\n")


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
