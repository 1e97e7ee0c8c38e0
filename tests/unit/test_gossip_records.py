"""Gossip records and messages (hearthfile/gossip/records.py, messages.py): signing,
the exact signed bytes, strict decoding, and garbage in."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hearthfile import limits
from hearthfile.cids import Cid, canonical_decode, canonical_encode, cid_of
from hearthfile.gossip import messages, records
from hearthfile.gossip.messages import (
    Digest,
    MessageError,
    Records,
    decode_message,
    encode_message,
)
from hearthfile.gossip.records import (
    ADVERT_TAG,
    MAX_ADDRESSES,
    NODE_TAG,
    AdvertRecord,
    NodeRecord,
    Record,
    RecordError,
    decode_record,
    encode_record,
    next_seq,
    sign_advert,
    sign_node,
)
from hearthfile.identity import NodeKey

KEY = NodeKey.from_private_bytes(bytes(range(32)))
OTHER = NodeKey.from_private_bytes(bytes(range(1, 33)))
CIDS = [cid_of(bytes([i])) for i in range(8)]
T0 = 1_700_000_000_000


def advert(**fields: Any) -> AdvertRecord:
    args: dict[str, Any] = {
        "seq": T0 + 5, "prev": T0 + 1, "timestamp_ms": T0, "addresses": ["10.0.0.1:7700"],
        "added": CIDS[:3], "removed": CIDS[3:5],
    }  # fmt: skip
    args.update(fields)
    return sign_advert(KEY.sign, KEY.node_id, **args)


def node(**fields: Any) -> NodeRecord:
    args: dict[str, Any] = {
        "seq": T0 + 9, "timestamp_ms": T0, "addresses": ["10.0.0.1:7700", "[::1]:7700"],
        "snapshot_seq": T0 + 2,
    }  # fmt: skip
    args.update(fields)
    return sign_node(KEY.sign, KEY.node_id, **args)


def wire(record: Record) -> bytes:
    return canonical_encode(encode_record(record))  # type: ignore[arg-type]


def unwire(data: bytes) -> Record:
    """Bytes to a record as the bus would hand it over: msgpack, then the record codec."""
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises many types; the bus maps them all the same
        raise ValueError("not msgpack") from exc
    return decode_record(value)


# --- signing and the signed bytes ------------------------------------------------------------


@pytest.mark.parametrize("record", [advert(), advert(full=True, prev=0, removed=()), node()])
def test_round_trip_and_verify(record: Record) -> None:
    decoded = unwire(wire(record))
    assert decoded == record
    assert decoded.payload == record.payload
    assert decoded.verify()
    assert record.wire_bytes == len(wire(record))


def test_signed_bytes_are_the_fixed_order_array() -> None:
    a = advert()
    assert a.payload == canonical_encode([
        ADVERT_TAG, KEY.public_bytes, a.seq, a.prev, a.timestamp_ms, ["10.0.0.1:7700"],
        [bytes.fromhex(c[7:]) for c in sorted(CIDS[:3])],
        [bytes.fromhex(c[7:]) for c in sorted(CIDS[3:5])], False,
    ])  # fmt: skip
    n = node()
    assert n.payload == canonical_encode(
        [NODE_TAG, KEY.public_bytes, n.seq, n.timestamp_ms, list(n.addresses), n.snapshot_seq]
    )
    assert KEY.node_id.verify(a.payload, a.signature)


def test_cids_are_sorted_and_deduplicated_when_signing() -> None:
    a = advert(added=[CIDS[2], CIDS[0], CIDS[2]], removed=())
    assert a.added == tuple(sorted({CIDS[0], CIDS[2]}))


def test_a_record_signed_by_another_key_does_not_verify() -> None:
    forged = sign_advert(OTHER.sign, KEY.node_id, seq=2, prev=1, timestamp_ms=0, addresses=())
    assert not forged.verify()


def test_the_domain_tag_separates_the_kinds() -> None:
    n = node()
    # The same fields under the other tag are different bytes, so the signature fails.
    assert not KEY.node_id.verify(n.payload.replace(NODE_TAG.encode(), b"X" * len(NODE_TAG)),
                                  n.signature)  # fmt: skip


@pytest.mark.parametrize("record", [advert(), node()], ids=["advert", "node"])
def test_every_flipped_bit_is_rejected(record: Record) -> None:
    data = wire(record)
    for i in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[i // 8] ^= 1 << (i % 8)
        try:
            decoded = unwire(bytes(flipped))
        except (RecordError, ValueError):
            continue  # not msgpack, not canonical, or not a record: rejected by the decoder
        assert not decoded.verify(), f"bit {i} flipped and the record still verifies"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"seq": 0, "prev": 0, "full": True, "removed": ()}, "seq must be"),
        ({"seq": 2**63, "prev": 1}, "seq must be"),
        ({"prev": T0 + 5}, "prev must be"),
        ({"prev": 0}, "prev must be"),
        ({"full": True}, "a full record"),
        ({"full": True, "prev": 0}, "a full record"),
        ({"added": CIDS[:2], "removed": CIDS[1:3]}, "both added and removed"),
        ({"addresses": ["10.0.0.1:7700"] * (MAX_ADDRESSES + 1)}, "addresses"),
        ({"addresses": ["nohost"]}, "host:port"),
        ({"addresses": ["host:0"]}, "host:port"),
        ({"addresses": ["a b:1"]}, "host:port"),
        ({"addresses": ["h\u00e9:1"]}, "host:port"),
        ({"added": ["blake3:00"]}, "not a CID"),
        ({"timestamp_ms": -1}, "timestamp"),
    ],
)
def test_signing_refuses_bad_fields(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        advert(**change)


def test_next_seq_survives_restarts_and_never_repeats() -> None:
    assert next_seq(0, T0) == T0  # a fresh start begins at the clock
    assert next_seq(T0 + 5, T0) == T0 + 6  # faster than the clock: one more
    assert next_seq(T0, T0 + 1000) == T0 + 1000


# --- decoding hostile values -------------------------------------------------------------------


def _mutate(value: list[Any], index: int, new: Any) -> list[Any]:
    copy = list(value)
    copy[index] = new
    return copy


GOOD_ADVERT = encode_record(advert())
GOOD_NODE = encode_record(node())
DIGEST = bytes(32)


@pytest.mark.parametrize(
    "value",
    [
        None,
        5,
        "x",
        [],
        {},
        ["hearthfile/other/1"],
        [ADVERT_TAG, *GOOD_ADVERT[1:-1]],
        [*GOOD_ADVERT, b""],
        [NODE_TAG, *GOOD_NODE[1:-1]],
        ["x", *GOOD_ADVERT[1:]],
        _mutate(GOOD_ADVERT, 1, bytes(31)),
        _mutate(GOOD_ADVERT, 1, "key"),
        _mutate(GOOD_ADVERT, 2, True),
        _mutate(GOOD_ADVERT, 2, -1),
        _mutate(GOOD_ADVERT, 2, 2**63),
        _mutate(GOOD_ADVERT, 2, 1.5),
        _mutate(GOOD_ADVERT, 3, None),
        _mutate(GOOD_ADVERT, 5, "10.0.0.1:7700"),
        _mutate(GOOD_ADVERT, 5, [b"10.0.0.1:7700"]),
        _mutate(GOOD_ADVERT, 6, [DIGEST, DIGEST]),
        _mutate(GOOD_ADVERT, 6, [b"\x01" * 32, DIGEST]),
        _mutate(GOOD_ADVERT, 6, [bytes(33)]),
        _mutate(GOOD_ADVERT, 6, ["blake3:" + "0" * 64]),
        _mutate(GOOD_ADVERT, 6, [bytes([i]) * 32 for i in range(1, 200)] * 42),
        _mutate(GOOD_ADVERT, 7, GOOD_ADVERT[6]),
        _mutate(GOOD_ADVERT, 8, 1),
        _mutate(GOOD_ADVERT, 9, bytes(63)),
        _mutate(GOOD_NODE, 5, GOOD_NODE[2] + 1),
        _mutate(GOOD_NODE, 4, ["x" * 300 + ":1"]),
    ],
)
def test_malformed_records_are_typed_rejections(value: Any) -> None:
    with pytest.raises(RecordError):
        decode_record(value)


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.binary(max_size=70)
    | st.text(max_size=30) | st.sampled_from([ADVERT_TAG, NODE_TAG, DIGEST, T0]),
    lambda inner: st.lists(inner, max_size=12) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=16,
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(msgpack_values)
def test_garbage_values_only_raise_record_error(value: Any) -> None:
    with contextlib.suppress(RecordError):
        decode_record(value)


@settings(max_examples=150, deadline=None)
@given(st.lists(msgpack_values, min_size=1, max_size=11), st.sampled_from([ADVERT_TAG, NODE_TAG]))
def test_garbage_under_a_real_tag_only_raises_record_error(rest: list[Any], tag: str) -> None:
    with contextlib.suppress(RecordError):
        decode_record([tag, *rest])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_never_make_a_valid_record(data: bytes) -> None:
    try:
        record = unwire(data)
    except (RecordError, ValueError):
        return
    assert not record.verify()


# --- messages ----------------------------------------------------------------------------------


def test_messages_round_trip_with_exact_sizes() -> None:
    entries = {KEY.public_bytes: (T0, 3), OTHER.public_bytes: (0, 2**40)}
    for message in (
        Digest(entries),
        Digest({}),
        Records((node(), advert()), {OTHER.public_bytes: (5, 0)}),
        Records(()),
    ):
        value = encode_message(message)
        data = canonical_encode(value)  # type: ignore[arg-type]
        assert decode_message(canonical_decode(data, max_items=10_000)) == message
        assert message.wire_bytes == len(data)


def test_digest_size_is_exact_for_many_entries() -> None:
    entries = {bytes([i % 256, i // 256]) * 16: (T0 + i, i) for i in range(300)}
    data = canonical_encode(encode_message(Digest(entries)))  # type: ignore[arg-type]
    assert Digest(entries).wire_bytes == len(data)


@pytest.mark.parametrize(
    "value",
    [
        None,
        [],
        {"t": "nope"},
        {"t": "digest"},
        {"t": "digest", "e": [[DIGEST, 1]]},
        {"t": "digest", "e": [[DIGEST, 1, 2], [DIGEST, 3, 4]]},
        {"t": "digest", "e": [[bytes(31), 1, 2]]},
        {"t": "digest", "e": [[DIGEST, True, 2]]},
        {"t": "digest", "e": [[DIGEST, -1, 2]]},
        {"t": "digest", "e": [DIGEST]},
        {"t": "digest", "e": [[DIGEST, 1, 2]] * (messages.MAX_DIGEST_ENTRIES + 1)},
        {"t": "records"},
        {"t": "records", "r": [GOOD_ADVERT[:-1]]},
        {"t": "records", "r": [GOOD_NODE] * (messages.MAX_MESSAGE_RECORDS + 1)},
        {"t": "records", "r": [], "w": "x"},
    ],
)
def test_malformed_messages_are_typed_rejections(value: Any) -> None:
    with pytest.raises(MessageError):
        decode_message(value)


def test_unknown_keys_are_ignored() -> None:
    assert decode_message({"t": "records", "r": [GOOD_NODE], "later": 1}) == Records((node(),))


@settings(max_examples=200, deadline=None)
@given(msgpack_values)
def test_garbage_messages_only_raise_message_error(value: Any) -> None:
    for candidate in (value, {"t": "digest", "e": value}, {"t": "records", "r": value}):
        with contextlib.suppress(MessageError):
            decode_message(candidate)


# --- limits shared with config.py (limits.py) ----------------------------------------------


def test_record_bytes_bounds_the_largest_record() -> None:
    n = 2000
    largest = advert(
        seq=2**63 - 1, prev=2**63 - 2, timestamp_ms=2**63 - 1,
        addresses=["a" * (records.MAX_ADDRESS_BYTES - 6) + ":65535"] * MAX_ADDRESSES,
        added=[cid_of(i.to_bytes(4, "big")) for i in range(n // 2)],
        removed=[cid_of(b"r" + i.to_bytes(4, "big")) for i in range(n // 2)],
    )  # fmt: skip
    assert largest.wire_bytes <= limits.record_bytes(n)


def test_cids_decode_back_to_text() -> None:
    a = unwire(wire(advert()))
    assert all(isinstance(c, str) and c.startswith("blake3:") for c in a.added)
    assert set(a.added) == set(CIDS[:3])


def test_tampered_copy_fails_verification() -> None:
    a = advert()
    evil = Cid("blake3:" + "f" * 64)
    for tampered in (
        replace(a, added=(*a.added, evil)),
        replace(a, seq=a.seq + 1),
        replace(a, addresses=("6.6.6.6:1",)),
        replace(a, full=True, prev=0, removed=()),
    ):
        assert not tampered.verify()
