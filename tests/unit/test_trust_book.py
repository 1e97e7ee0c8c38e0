"""The trust book and its file (hearthfile/trust/book.py, storage.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hearthfile.identity import NodeKey
from hearthfile.trust.book import TrustBook, TrustEntry, TrustError
from hearthfile.trust.levels import TrustLevel
from hearthfile.trust.storage import TrustFile, open_book

ME, ALICE, BOB, CAROL = (NodeKey.generate().node_id for _ in range(4))


def test_levels_default_self_and_open_membership() -> None:
    book = TrustBook(ME)
    assert book.level(ME) is TrustLevel.SELF
    assert book.level(ALICE) is TrustLevel.STRANGER
    assert TrustBook(ME, open_membership=True).level(ALICE) is TrustLevel.MEMBER


def test_grants_win_over_config_and_report_changes() -> None:
    book = TrustBook(ME, declared={ALICE: TrustLevel.TRUSTED, BOB: TrustLevel.MEMBER})
    change = book.grant(ALICE, TrustLevel.MEMBER, now=5.0)
    assert (change.before, change.after, change.lowered) == (
        TrustLevel.TRUSTED,
        TrustLevel.MEMBER,
        True,
    )
    assert book.level(ALICE) is TrustLevel.MEMBER
    assert book.grant(CAROL, TrustLevel.TRUSTED, now=6.0).raised
    assert [(e.node, e.level, e.source) for e in book.entries()] == sorted(
        [
            (ALICE, TrustLevel.MEMBER, "local"),
            (BOB, TrustLevel.MEMBER, "config"),
            (CAROL, TrustLevel.TRUSTED, "local"),
        ],
        key=lambda row: str(row[0]),
    )


def test_refusals() -> None:
    book = TrustBook(ME, declared={BOB: TrustLevel.MEMBER})
    with pytest.raises(TrustError, match="itself"):
        book.grant(ME, TrustLevel.TRUSTED, now=0)
    with pytest.raises(TrustError, match="member or trusted"):
        book.grant(ALICE, TrustLevel.SELF, now=0)
    with pytest.raises(TrustError, match=r"config\.yaml"):
        book.revoke(BOB)
    with pytest.raises(TrustError, match="itself"):
        book.revoke(ME)


def test_revoke_takes_access_away() -> None:
    book = TrustBook(ME)
    book.grant(ALICE, TrustLevel.TRUSTED, now=1)
    change = book.revoke(ALICE)
    assert change.lowered and book.level(ALICE) is TrustLevel.STRANGER
    assert not book.revoke(ALICE).lowered  # twice: nothing more to take


def test_file_round_trip(tmp_path: Path) -> None:
    book = open_book(tmp_path, ME)
    book.grant(ALICE, TrustLevel.MEMBER, now=1.5)
    book.grant(BOB, TrustLevel.TRUSTED, now=2.5, source="invite", introducer=BOB)
    again = open_book(tmp_path, ME)
    assert again.entries() == book.entries()
    assert again.entry(BOB) == TrustEntry(BOB, TrustLevel.TRUSTED, "invite", 2.5, BOB)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trust.json"]  # no temp files


def test_legacy_trust_yaml_is_taken_over(tmp_path: Path) -> None:
    (tmp_path / "trust.yaml").write_text(f"{ALICE}: trusted\n")
    book = open_book(tmp_path, ME)
    assert book.level(ALICE) is TrustLevel.TRUSTED
    book.revoke(ALICE)
    assert not (tmp_path / "trust.yaml").exists()
    assert (tmp_path / "trust.yaml.migrated").exists()
    assert open_book(tmp_path, ME).level(ALICE) is TrustLevel.STRANGER


def test_damaged_file_names_itself(tmp_path: Path) -> None:
    (tmp_path / "trust.json").write_text("{not json")
    with pytest.raises(TrustError, match=r"trust\.json: unreadable"):
        TrustFile(tmp_path).load()


def test_declared_config_levels(tmp_path: Path) -> None:
    book = open_book(tmp_path, ME, ((str(ALICE), "trusted"),))
    assert book.level(ALICE) is TrustLevel.TRUSTED
    with pytest.raises(ValueError):
        open_book(tmp_path, ME, ((str(ALICE), "self"),))


def test_trusted_pages_follow_one_another_without_gaps() -> None:
    from hearthfile.services.trust import trusted_page

    book = TrustBook(NodeKey.generate().node_id)
    for _ in range(7):
        book.grant(NodeKey.generate().node_id, TrustLevel.MEMBER, now=1.0)
    entries = book.entries()
    seen: list[str] = []
    after = ""
    while True:
        page = trusted_page(entries, after, 3)
        seen += [row["node_id"] for row in page["items"]]
        if page["next"] is None:
            break
        after = page["next"]
    assert seen == [str(e.node) for e in entries] and len(seen) == 7
    assert trusted_page(entries, "", 7)["next"] is None, "a last full page says it is the last"
