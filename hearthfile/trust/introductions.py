"""Signed introductions and revocations, and who accepts them (pure; DESIGN.md 11).

An *introduction* is a node (the introducer) vouching for another (the subject) at a
level; a *revocation* is the same record at level 0, withdrawing it. Both spread by
flooding among members (services/introduce.py), and every node that takes the
introducer as one of its introducers -- its ``trusted`` peers, and the node it joined
through -- trusts the subject without a ``trust`` call of its own, never above the
introducer's own level in its book.

Signed bytes: ``canonical_encode`` (deterministic msgpack) of the fixed-order array

    ["hearthfile/intro/1", introducer key (bin 32), subject key (bin 32),
     level (0 revoked, 1 member, 2 trusted), seq (int), timestamp_ms (int)]

and on the wire the same array with the 64-byte Ed25519 signature appended. Replay
protection: per (introducer, subject) only a strictly higher seq is accepted, so an
old introduction replayed after its revocation changes nothing; ``seq`` is
``max(last + 1, now_ms)`` as for gossip records. Records from further than
``MAX_FUTURE_MS`` ahead of our clock are refused. Bounds: records kept per
introducer and in all, records per message.

Who signs: the inviter, for each node that joined with its invite; and a node that
has introduced anyone (an introducer) also introduces the peers it accepted through
other introducers and the node it joined through, so that two introducers' networks
meet: a node that joined the first learns the second's newcomers through the first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from hearthfile.cids import canonical_encode
from hearthfile.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, NodeId
from hearthfile.trust.book import TrustBook, TrustChange
from hearthfile.trust.levels import TrustLevel

INTRO_TAG: Final = "hearthfile/intro/1"
REVOKED: Final = 0
#: Records kept per introducer, and in all: bound the memory one node may claim.
MAX_PER_INTRODUCER: Final = 1024
MAX_RECORDS: Final = 8192
#: Records in one ``trust.introductions`` message (about 180 bytes each).
MAX_MESSAGE_RECORDS: Final = 64
MAX_FUTURE_MS: Final = 300_000
_MAX_INT: Final = 2**63 - 1

Sign = Callable[[bytes], bytes]


class IntroError(ValueError):
    """A record that does not decode or verify; ``str`` is a short reason."""


@dataclass(frozen=True, slots=True)
class Introduction:
    introducer: NodeId
    subject: NodeId
    level: int  # 0 revoked, 1 member, 2 trusted
    seq: int
    timestamp_ms: int
    signature: bytes

    @property
    def key(self) -> tuple[NodeId, NodeId]:
        return (self.introducer, self.subject)

    @property
    def revoked(self) -> bool:
        return self.level == REVOKED

    def signed_bytes(self) -> bytes:
        return signed_bytes(self.introducer, self.subject, self.level, self.seq, self.timestamp_ms)

    def verify(self) -> bool:
        return self.introducer.verify(self.signed_bytes(), self.signature)

    def encode(self) -> list[object]:
        return [
            INTRO_TAG,
            self.introducer.public_key,
            self.subject.public_key,
            self.level,
            self.seq,
            self.timestamp_ms,
            self.signature,
        ]


def signed_bytes(introducer: NodeId, subject: NodeId, level: int, seq: int, ts_ms: int) -> bytes:
    return canonical_encode(
        [INTRO_TAG, introducer.public_key, subject.public_key, level, seq, ts_ms]
    )


def sign_introduction(
    sign: Sign, introducer: NodeId, subject: NodeId, level: int, seq: int, ts_ms: int
) -> Introduction:
    signature = sign(signed_bytes(introducer, subject, level, seq, ts_ms))
    return Introduction(introducer, subject, level, seq, ts_ms, signature)


def decode_introduction(value: object) -> Introduction:
    """Hostile input: every field checked; ``IntroError`` otherwise (signature unchecked)."""
    if not isinstance(value, list | tuple) or len(value) != 7 or value[0] != INTRO_TAG:
        raise IntroError("not an introduction record")
    _, introducer, subject, level, seq, ts_ms, signature = value
    for raw in (introducer, subject):
        if not isinstance(raw, bytes) or len(raw) != PUBLIC_KEY_BYTES:
            raise IntroError("bad node key")
    if level not in (0, 1, 2) or isinstance(level, bool):
        raise IntroError("bad level")
    for number in (seq, ts_ms):
        if isinstance(number, bool) or not isinstance(number, int) or not 0 < number <= _MAX_INT:
            raise IntroError("bad seq or timestamp")
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
        raise IntroError("bad signature length")
    if introducer == subject:
        raise IntroError("a node cannot introduce itself")
    return Introduction(NodeId(introducer), NodeId(subject), level, seq, ts_ms, signature)


class IntroBook:
    """The newest record per (introducer, subject) this node holds and relays."""

    def __init__(self, me: NodeId, sign: Sign, records: Iterable[Introduction] = ()) -> None:
        self.me = me
        self._sign = sign
        self._records: dict[tuple[NodeId, NodeId], Introduction] = {}
        self._per_introducer: dict[NodeId, int] = {}
        self._last_seq = 0
        for record in records:
            self._keep(record)
            if record.introducer == me:
                self._last_seq = max(self._last_seq, record.seq)

    def __len__(self) -> int:
        return len(self._records)

    def records(self) -> list[Introduction]:
        return list(self._records.values())

    @property
    def introducing(self) -> bool:
        """True once this node has introduced anyone: it then introduces all it trusts."""
        return self._per_introducer.get(self.me, 0) > 0

    def introduced(self, subject: NodeId) -> bool:
        """Does this node's current record vouch for ``subject``?"""
        record = self._records.get((self.me, subject))
        return record is not None and not record.revoked

    def sign(self, subject: NodeId, level: int, now_ms: int) -> Introduction:
        """Our own record for ``subject`` (level 0 revokes); kept and returned to spread."""
        self._last_seq = max(self._last_seq + 1, now_ms)
        record = sign_introduction(self._sign, self.me, subject, level, self._last_seq, now_ms)
        self._keep(record)
        return record

    def receive(self, record: Introduction, now_ms: int) -> str | None:
        """Keep ``record`` if it is valid and news: None, else why it was dropped."""
        if record.timestamp_ms > now_ms + MAX_FUTURE_MS:
            return "future"
        held = self._records.get(record.key)
        if held is not None and held.seq >= record.seq:
            return "not_newer"
        if held is None and (
            self._per_introducer.get(record.introducer, 0) >= MAX_PER_INTRODUCER
            or len(self._records) >= MAX_RECORDS
        ):
            return "full"
        if not record.verify():
            return "bad_signature"
        if record.introducer == self.me:
            self._last_seq = max(self._last_seq, record.seq)  # our own, relayed back
        self._keep(record)
        return None

    def _keep(self, record: Introduction) -> None:
        if record.key not in self._records:
            self._per_introducer[record.introducer] = (
                self._per_introducer.get(record.introducer, 0) + 1
            )
        self._records[record.key] = record


#: ``introducers`` in config.yaml: whose introductions a node follows.
INTRODUCER_POLICIES: Final = ("trusted", "joined", "none")


def is_introducer(book: TrustBook, node: NodeId, policy: str = "trusted") -> bool:
    """Whose introductions this node follows: by default its trusted peers and the node
    it joined through; ``joined``: only the latter; ``none``: nobody."""
    entry = book.entry(node)
    if entry is None or policy == "none":
        return False
    if entry.source == "joined" and entry.level >= TrustLevel.MEMBER:
        return True
    return policy == "trusted" and entry.level >= TrustLevel.TRUSTED


def apply_introduction(
    book: TrustBook, record: Introduction, now: float, policy: str = "trusted"
) -> TrustChange | None:
    """What a held record does to this node's trust book, if anything."""
    subject, introducer = record.subject, record.introducer
    if subject == book.me or not is_introducer(book, introducer, policy):
        return None
    entry = book.entry(subject)
    if record.revoked:
        if entry is not None and entry.source == "introduction" and entry.introducer == introducer:
            return book.revoke(subject)
        return None
    level = min(TrustLevel(record.level), book.level(introducer))
    if level < TrustLevel.MEMBER:
        return None
    if entry is not None and (entry.source != "introduction" or entry.level >= level):
        return None  # a decision of our own, or an introduction as good, stands
    return book.grant(subject, level, now=now, source="introduction", introducer=introducer)


def to_introduce(book: TrustBook, intros: IntroBook) -> Sequence[tuple[NodeId, int]]:
    """(subject, level) this node should vouch for and does not yet, once introducing."""
    if not intros.introducing:
        return []
    return [
        (e.node, int(e.level))
        for e in book.entries()
        if e.source in ("invite", "joined", "introduction") and not intros.introduced(e.node)
    ]
