"""Invite tokens, redemption and the join proof (hearthfile/trust/invites.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hearthfile.identity import NodeKey
from hearthfile.trust.invites import (
    TOKEN_PREFIX,
    Admitted,
    InviteBook,
    JoinLimiter,
    Token,
    TokenError,
    decode_token,
    encode_token,
    parse_duration,
)
from hearthfile.trust.levels import TrustLevel

INVITER, JOINER, STRANGER = (NodeKey.generate().node_id for _ in range(3))
SECRET = bytes(range(16))
T0 = 1_800_000_000.0


def token(**overrides: object) -> Token:
    fields: dict[str, object] = {
        "inviter": INVITER,
        "level": TrustLevel.MEMBER,
        "expires_at": int(T0 + 3600),
        "secret": SECRET,
        "addresses": ("127.0.0.1:7700", "[::1]:7700"),
    }
    fields.update(overrides)
    return Token(**fields)  # type: ignore[arg-type]


def test_token_round_trip_is_one_safe_line() -> None:
    text = encode_token(token())
    assert text.startswith(TOKEN_PREFIX) and text.isalnum() and text == text.lower()
    assert decode_token(text) == token()
    assert decode_token(f"  {text}\n") == token()


@given(st.data())
def test_any_one_character_changed_is_refused(data: st.DataObject) -> None:
    text = encode_token(token(level=TrustLevel.TRUSTED))
    at = data.draw(st.integers(len(TOKEN_PREFIX), len(text) - 1))
    new = data.draw(
        st.sampled_from("abcdefghijklmnopqrstuvwxyz234567").filter(lambda c: c != text[at])
    )
    with pytest.raises(TokenError):
        decode_token(text[:at] + new + text[at + 1 :])


@pytest.mark.parametrize("text", ["", "hello", TOKEN_PREFIX, TOKEN_PREFIX + "A" * 40, "x" * 5000])
def test_garbage_is_refused_with_one_line(text: str) -> None:
    with pytest.raises(TokenError) as info:
        decode_token(text)
    assert "\n" not in str(info.value)


def make_book(uses: int = 1, ttl_s: float = 3600) -> tuple[InviteBook, Token]:
    book = InviteBook()
    made = book.create(
        INVITER,
        ("127.0.0.1:1",),
        level=TrustLevel.TRUSTED,
        uses=uses,
        ttl_s=ttl_s,
        secret=SECRET,
        now=T0,
    )
    return book, made


def test_redeem_once_then_used() -> None:
    book, made = make_book()
    proof = made.proof(JOINER)
    assert book.redeem(INVITER, JOINER, made.invite_id, proof, T0 + 1) == Admitted(
        TrustLevel.TRUSTED, 0
    )
    assert book.redeem(INVITER, JOINER, made.invite_id, proof, T0 + 2) == (
        "unknown or already used invite"
    )


def test_uses_count_down() -> None:
    book, made = make_book(uses=2)
    for left in (1, 0):
        outcome = book.redeem(INVITER, JOINER, made.invite_id, made.proof(JOINER), T0)
        assert isinstance(outcome, Admitted) and outcome.uses_left == left
    assert len(book) == 0


def test_expired_wrong_inviter_and_replay_by_another_node_grant_nothing() -> None:
    book, made = make_book(ttl_s=60)
    # a stranger replaying the joiner's proof: bound to the joiner's identity
    assert book.redeem(INVITER, STRANGER, made.invite_id, made.proof(JOINER), T0) == (
        "invite proof does not match"
    )
    # a proof made for another inviter (the token presented to the wrong node)
    other = token(inviter=STRANGER)
    assert book.redeem(INVITER, JOINER, made.invite_id, other.proof(JOINER), T0) == (
        "invite proof does not match"
    )
    assert len(book) == 1  # failed proofs do not use the invite up
    assert book.redeem(INVITER, JOINER, made.invite_id, made.proof(JOINER), T0 + 61) == (
        "invite expired"
    )
    assert len(book) == 0


def test_the_book_keeps_no_secret() -> None:
    saved: list[object] = []

    class Store:
        def save(self, invites: list[object]) -> None:
            saved[:] = invites

    book = InviteBook(store=Store())
    book.create(INVITER, ("h:1",), level=TrustLevel.MEMBER, uses=1, ttl_s=60, secret=SECRET, now=T0)
    assert saved and SECRET not in repr(saved).encode() and SECRET.hex() not in repr(saved)


@pytest.mark.parametrize(
    ("text", "seconds"), [("30m", 1800), ("1h", 3600), ("7d", 604800), ("45s", 45)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1", "1w", "0h", "-1h", "1.5h", "99d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_join_attempts_are_rate_limited() -> None:
    limiter = JoinLimiter(per_peer=3, total=5, refill_s=10)
    assert [limiter.allow(STRANGER, 0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow(JOINER, 0) and limiter.allow(JOINER, 0)
    assert not limiter.allow(INVITER, 0)  # the total is spent
    assert limiter.allow(STRANGER, 10)  # refilled
