"""Introduction records and who accepts them (hearthfile/trust/introductions.py)."""

from __future__ import annotations

import pytest

from hearthfile.identity import NodeKey
from hearthfile.trust.book import TrustBook
from hearthfile.trust.introductions import (
    MAX_PER_INTRODUCER,
    IntroBook,
    IntroError,
    apply_introduction,
    decode_introduction,
    sign_introduction,
    to_introduce,
)
from hearthfile.trust.levels import TrustLevel

INTRODUCER, ME, SUBJECT, OTHER = (NodeKey.generate() for _ in range(4))
NOW_MS = 1_800_000_000_000


def record(
    level: int = 1, seq: int = NOW_MS, key: NodeKey = INTRODUCER, subject: NodeKey = SUBJECT
):  # type: ignore[no-untyped-def]
    return sign_introduction(key.sign, key.node_id, subject.node_id, level, seq, seq)


def test_round_trip_and_signature() -> None:
    r = record(level=2)
    assert decode_introduction(r.encode()) == r and r.verify()
    forged = decode_introduction([*r.encode()[:3], 1, *r.encode()[4:]])  # level raised
    assert not forged.verify()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda v: v[:-1],
        lambda v: ["hearthfile/advert/1", *v[1:]],
        lambda v: [*v[:3], 3, *v[4:]],
        lambda v: [*v[:3], True, *v[4:]],
        lambda v: [*v[:4], -1, *v[5:]],
        lambda v: [*v[:6], b"x" * 10],
        lambda v: [v[0], v[1], v[1], *v[3:]],
    ],
)
def test_garbage_is_refused(mutate) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(IntroError):
        decode_introduction(mutate(record().encode()))


def test_replay_of_an_older_record_changes_nothing() -> None:
    book = IntroBook(ME.node_id, ME.sign)
    intro, revoke = record(seq=NOW_MS), record(level=0, seq=NOW_MS + 1)
    assert book.receive(intro, NOW_MS) is None
    assert book.receive(revoke, NOW_MS) is None
    assert book.receive(intro, NOW_MS) == "not_newer"  # replayed after its revocation
    assert book.records() == [revoke]
    assert book.receive(record(seq=NOW_MS + 10**9), NOW_MS) == "future"
    bad = record(seq=NOW_MS + 5)
    tampered = decode_introduction([*bad.encode()[:4], bad.seq + 1, *bad.encode()[5:]])
    assert book.receive(tampered, NOW_MS) == "bad_signature"


def test_records_per_introducer_are_bounded() -> None:
    book = IntroBook(ME.node_id, ME.sign)
    subjects = [NodeKey.generate() for _ in range(MAX_PER_INTRODUCER)]
    for s in subjects:
        assert book.receive(record(subject=s), NOW_MS) is None
    assert book.receive(record(subject=OTHER), NOW_MS) == "full"


def trusting_introducer(level: TrustLevel, source: str = "local") -> TrustBook:
    book = TrustBook(ME.node_id)
    book.grant(INTRODUCER.node_id, level, now=0, source=source)  # type: ignore[arg-type]
    return book


def test_accepted_from_trusted_and_joined_introducers_only() -> None:
    assert apply_introduction(trusting_introducer(TrustLevel.MEMBER), record(), 1) is None
    book = trusting_introducer(TrustLevel.TRUSTED)
    change = apply_introduction(book, record(level=2), 1)
    assert change is not None and book.level(SUBJECT.node_id) is TrustLevel.TRUSTED
    entry = book.entry(SUBJECT.node_id)
    assert entry is not None and entry.introducer == INTRODUCER.node_id
    joined = trusting_introducer(TrustLevel.MEMBER, "joined")
    apply_introduction(joined, record(level=2), 1)
    assert joined.level(SUBJECT.node_id) is TrustLevel.MEMBER  # never above the introducer


def test_revocation_only_by_the_introducer_and_local_decisions_stand() -> None:
    book = trusting_introducer(TrustLevel.TRUSTED)
    book.grant(OTHER.node_id, TrustLevel.TRUSTED, now=0)
    apply_introduction(book, record(), 1)
    assert apply_introduction(book, record(level=0, key=OTHER), 1) is None
    assert book.level(SUBJECT.node_id) is TrustLevel.MEMBER
    apply_introduction(book, record(level=0, seq=NOW_MS + 1), 1)
    assert book.level(SUBJECT.node_id) is TrustLevel.STRANGER
    book.revoke(SUBJECT.node_id, block=True)
    assert apply_introduction(book, record(seq=NOW_MS + 2), 1) is None  # untrusted here
    assert book.level(SUBJECT.node_id) is TrustLevel.STRANGER


def test_an_introducer_vouches_for_what_it_accepted() -> None:
    book = trusting_introducer(TrustLevel.TRUSTED, "joined")
    intros = IntroBook(ME.node_id, ME.sign)
    assert to_introduce(book, intros) == []  # not introducing anyone yet
    intros.sign(OTHER.node_id, 1, NOW_MS)
    assert to_introduce(book, intros) == [(INTRODUCER.node_id, 2)]
    mine = intros.sign(INTRODUCER.node_id, 2, NOW_MS)
    assert mine.seq > NOW_MS and to_introduce(book, intros) == []


def test_introducer_policies() -> None:
    trusted_peer = trusting_introducer(TrustLevel.TRUSTED)
    joined = trusting_introducer(TrustLevel.MEMBER, "joined")
    assert apply_introduction(trusted_peer, record(), 1, "joined") is None
    assert apply_introduction(joined, record(), 1, "none") is None
    assert apply_introduction(joined, record(), 1, "joined") is not None
