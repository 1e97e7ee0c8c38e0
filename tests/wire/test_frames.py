"""Bus frame encoding (hearthfile/bus/frames.py): golden vectors, round trips, garbage in."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hearthfile.bus import frames
from hearthfile.bus.channel import DEFAULT_MAX_MESSAGE_BYTES
from hearthfile.bus.frames import (
    MAX_ARRAY_LEN,
    MAX_BIN_BYTES,
    MAX_CALL_ID,
    MAX_CREDIT_GRANT,
    MAX_DEPTH,
    MAX_FRAME_BYTES,
    MAX_MAP_LEN,
    MAX_STR_BYTES,
    Cancel,
    Credit,
    Data,
    End,
    ErrorResponse,
    Frame,
    Request,
    Response,
    decode,
    encode,
)
from hearthfile.errors import WIRE_ERROR_CODES, LocalProtocolError, RemoteProtocolError

ROOT = Path(__file__).resolve().parents[2]

# --- golden vectors: hex with a comment per field, checked in both directions -------------

GOLDEN: list[tuple[Frame, str]] = [
    (
        Request(1, "bus.describe", (1, 0), None),
        """
        85                                    map, 5 entries
        a1 74  a3 72 65 71                    "t": "req"
        a2 69 64  01                          "id": 1
        a3 63 61 70                           "cap":
        ac 62 75 73 2e 64 65 73 63 72 69 62 65      "bus.describe"
        a1 76  92 01 00                       "v": [1, 0]
        a4 61 72 67 73  c0                    "args": nil
        """,
    ),
    (
        Response(1, {"ok": True}),
        """
        83                                    map, 3 entries
        a1 74  a3 72 65 73                    "t": "res"
        a2 69 64  01                          "id": 1
        a4 62 6f 64 79                        "body":
        81  a2 6f 6b  c3                            {"ok": true}
        """,
    ),
    (
        ErrorResponse(4, "busy", "try later"),
        """
        84                                    map, 4 entries
        a1 74  a3 65 72 72                    "t": "err"
        a2 69 64  04                          "id": 4
        a4 63 6f 64 65  a4 62 75 73 79        "code": "busy"
        a3 6d 73 67                           "msg":
        a9 74 72 79 20 6c 61 74 65 72               "try later"
        """,
    ),
    (
        Data(3, {"i": 2, "data": b"\x00\xff"}),
        """
        83                                    map, 3 entries
        a1 74  a4 64 61 74 61                 "t": "data"
        a2 69 64  03                          "id": 3
        a4 62 6f 64 79                        "body":
        82                                          map, 2 entries
        a1 69  02                                   "i": 2
        a4 64 61 74 61  c4 02 00 ff                 "data": bin 8, 2 bytes 00 ff
        """,
    ),
    (
        End(3),
        """
        82                                    map, 2 entries
        a1 74  a3 65 6e 64                    "t": "end"
        a2 69 64  03                          "id": 3
        """,
    ),
    (
        Cancel(300),
        """
        82                                    map, 2 entries
        a1 74  a6 63 61 6e 63 65 6c           "t": "cancel"
        a2 69 64  cd 01 2c                    "id": 300 (uint 16)
        """,
    ),
    (
        Credit(3, 4),
        """
        83                                    map, 3 entries
        a1 74  a6 63 72 65 64 69 74           "t": "credit"
        a2 69 64  03                          "id": 3
        a1 6e  04                             "n": 4
        """,
    ),
]


def unhex(annotated: str) -> bytes:
    """Hex pairs at the start of each line, up to the first run of 3+ spaces."""
    pairs: list[str] = []
    for line in annotated.strip().splitlines():
        hex_part = re.split(r"\s{3,}", line.strip(), maxsplit=1)[0]
        pairs.extend(hex_part.split())
    return bytes.fromhex("".join(pairs))


@pytest.mark.parametrize(("frame", "annotated"), GOLDEN, ids=lambda v: getattr(v, "TAG", ""))
def test_golden_vector_encodes_exactly(frame: Frame, annotated: str) -> None:
    assert bytes(encode(frame)) == unhex(annotated)


@pytest.mark.parametrize(("frame", "annotated"), GOLDEN, ids=lambda v: getattr(v, "TAG", ""))
def test_golden_vector_decodes_exactly(frame: Frame, annotated: str) -> None:
    assert decode(unhex(annotated)) == frame


def test_golden_vectors_cover_every_tag() -> None:
    assert {frame.TAG for frame, _ in GOLDEN} == set(frames.FRAME_TAGS)


# --- round trips ---------------------------------------------------------------------------

leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=40)
)
values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)
call_ids = st.integers(min_value=1, max_value=MAX_CALL_ID)
cap_names = st.text(min_size=1, max_size=32)
versions = st.tuples(st.integers(0, 65_535), st.integers(0, 65_535))
codes = st.sampled_from(sorted(WIRE_ERROR_CODES))
any_frame: st.SearchStrategy[Frame] = st.one_of(
    st.builds(Request, call_ids, cap_names, versions, values),
    st.builds(Response, call_ids, values),
    st.builds(ErrorResponse, call_ids, codes, st.text(max_size=100)),
    st.builds(Data, call_ids, values),
    st.builds(End, call_ids),
    st.builds(Cancel, call_ids),
    st.builds(Credit, call_ids, st.integers(1, MAX_CREDIT_GRANT)),
)


@given(any_frame)
def test_every_frame_round_trips(frame: Frame) -> None:
    assert decode(encode(frame)) == frame


def test_large_data_frame_round_trips_and_fits() -> None:
    chunk = bytes(range(256)) * 1024  # 256 KiB
    frame = Data(7, {"i": 3, "data": chunk})
    encoded = encode(frame)
    assert encoded.nbytes < MAX_FRAME_BYTES
    assert decode(encoded) == frame


def test_memoryview_payload_encodes_like_bytes() -> None:
    chunk = bytearray(b"x" * 1000)
    assert bytes(encode(Data(1, memoryview(chunk)))) == bytes(encode(Data(1, bytes(chunk))))


def test_frame_limit_matches_channel_limit() -> None:
    assert MAX_FRAME_BYTES == DEFAULT_MAX_MESSAGE_BYTES


# --- garbage in: only RemoteProtocolError ------------------------------------------------


def decodes_or_refuses(data: bytes) -> None:
    try:
        frame = decode(data)
    except RemoteProtocolError:
        return
    assert isinstance(frame, Request | Response | ErrorResponse | Data | End | Cancel | Credit)


@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_remote_protocol_error(data: bytes) -> None:
    decodes_or_refuses(data)


@given(any_frame, st.data())
def test_mutated_frames_decode_or_raise_remote_protocol_error(
    frame: Frame, data: st.DataObject
) -> None:
    encoded = bytearray(encode(frame))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(encoded) - 1))
        encoded[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(encoded)))
    decodes_or_refuses(bytes(encoded[:cut]))
    decodes_or_refuses(bytes(encoded))


raw_fields = st.dictionaries(
    st.sampled_from(["t", "id", "cap", "v", "args", "body", "code", "msg", "n", "x"]),
    st.one_of(values, st.sampled_from(frames.FRAME_TAGS), st.integers(-5, 5)),
    max_size=6,
)


@given(raw_fields)
@settings(max_examples=300)
def test_structured_garbage_decodes_or_raises(fields: dict[str, Any]) -> None:
    decodes_or_refuses(msgpack.packb(fields, use_bin_type=True))


def packed(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def refuses(data: bytes, reason: str | None = None) -> None:
    with pytest.raises(RemoteProtocolError, match=reason):
        decode(data)


@pytest.mark.parametrize(
    "fields",
    [
        {"t": "nope", "id": 1},
        {"t": 3, "id": 1},
        {"id": 1},
        {"t": "end"},
        {"t": "end", "id": 0},
        {"t": "end", "id": -1},
        {"t": "end", "id": MAX_CALL_ID + 1},
        {"t": "end", "id": True},
        {"t": "end", "id": 1.0},
        {"t": "req", "id": 1, "cap": "x", "v": [1], "args": None},
        {"t": "req", "id": 1, "cap": "x", "v": [1, -1], "args": None},
        {"t": "req", "id": 1, "cap": "x", "v": (1, 65_536), "args": None},
        {"t": "req", "id": 1, "cap": "", "v": [1, 0], "args": None},
        {"t": "req", "id": 1, "cap": "x" * 129, "v": [1, 0], "args": None},
        {"t": "req", "id": 1, "cap": b"x", "v": [1, 0], "args": None},
        {"t": "req", "id": 1, "cap": "x", "v": [1, 0]},
        {"t": "res", "id": 1},
        {"t": "err", "id": 1, "code": "oops", "msg": ""},
        {"t": "err", "id": 1, "code": "busy", "msg": "m" * 1025},
        {"t": "err", "id": 1, "code": "busy"},
        {"t": "credit", "id": 1, "n": 0},
        {"t": "credit", "id": 1, "n": MAX_CREDIT_GRANT + 1},
        {"t": "data", "id": 1},
    ],
)
def test_malformed_fields_are_refused(fields: dict[str, Any]) -> None:
    refuses(packed(fields))


def test_non_map_frames_are_refused() -> None:
    refuses(packed([1, 2]), "not a map")
    refuses(packed("end"), "not a map")


def test_unknown_extra_keys_are_ignored() -> None:
    assert decode(packed({"t": "end", "id": 5, "later": [1, 2]})) == End(5)


@pytest.mark.parametrize(
    "ext",
    [
        msgpack.ExtType(5, b"\x00"),
        msgpack.ExtType(0, b""),
        msgpack.Timestamp(1, 0),
    ],
    ids=["fixext", "empty ext", "timestamp"],
)
def test_extension_types_are_refused(ext: Any) -> None:
    refuses(packed({"t": "res", "id": 1, "body": ext}))


def test_oversize_frame_is_refused_before_unpacking() -> None:
    refuses(b"\xc0" * (MAX_FRAME_BYTES + 1), "exceeds")


def test_over_nested_frame_is_refused() -> None:
    body: Any = 0
    for _ in range(MAX_DEPTH):
        body = [body]
    refuses(packed({"t": "res", "id": 1, "body": body}), "deeper")
    ok: Any = 0
    for _ in range(MAX_DEPTH - 2):  # the frame map and the body count as the first levels
        ok = [ok]
    assert decode(packed({"t": "res", "id": 1, "body": ok})) == Response(1, ok)


def test_very_deep_nesting_is_refused_not_crashing() -> None:
    refuses(b"\x81\xa1t" + b"\x91" * 100_000 + b"\xc0")


def test_oversize_containers_and_strings_are_refused() -> None:
    refuses(packed({"t": "res", "id": 1, "body": [0] * (MAX_ARRAY_LEN + 1)}))
    refuses(packed({"t": "res", "id": 1, "body": {str(i): 0 for i in range(MAX_MAP_LEN + 1)}}))
    refuses(packed({"t": "res", "id": 1, "body": "s" * (MAX_STR_BYTES + 1)}))
    # A length header promising more than the frame holds.
    refuses(b"\x83\xa1t\xa3res\xa2id\x01\xa4body\xc6" + (MAX_BIN_BYTES + 1).to_bytes(4, "big"))


def test_non_string_map_keys_are_refused() -> None:
    refuses(packed({"t": "res", "id": 1, "body": {b"k": 1}}), "map key")
    refuses(b"\x83\xa1t\xa3res\xa2id\x01\xa4body\x81\x01\x02")


def test_invalid_utf8_is_refused() -> None:
    refuses(b"\x82\xa1t\xa2\xff\xfe\xa2id\x01")


# --- encoding refuses what a peer would refuse ---------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        End(0),
        End(MAX_CALL_ID + 1),
        ErrorResponse(1, "no_such_code", ""),
        ErrorResponse(1, "busy", "m" * 2000),
        Credit(1, 0),
        Request(1, "", (1, 0), None),
        Request(1, "x", (1, 70_000), None),
        Response(1, {1: "int key"}),
        Response(1, {"a set": {1, 2}}),
        Response(1, b"x" * (MAX_FRAME_BYTES + 1)),
        Data(1, [b"x" * (MAX_BIN_BYTES // 2)] * 3),
    ],
)
def test_encode_refuses_invalid_frames(frame: Frame) -> None:
    with pytest.raises(LocalProtocolError):
        encode(frame)


def test_encode_refuses_over_nested_bodies() -> None:
    body: Any = 0
    for _ in range(MAX_DEPTH):
        body = {"k": body}
    with pytest.raises(LocalProtocolError, match="deeper"):
        encode(Response(1, body))


# --- the protocol document's limits table matches the code ---------------------------------


def test_protocol_document_limits_match_constants() -> None:
    from hearthfile.bus import outbox, session
    from hearthfile.gossip import messages, records

    text = (ROOT / "docs" / "PROTOCOL.md").read_text()
    rows = re.findall(r"^\|\s*`([A-Z_]+)`\s*\|\s*([0-9_]+)\s*\|", text, flags=re.M)
    assert len(rows) >= 10, "the frame limits table is missing from docs/"
    modules = (frames, session, outbox, records, messages)
    for name, value in rows:
        defined = [getattr(m, name) for m in modules if hasattr(m, name)]
        assert defined, f"{name} is documented but not defined"
        assert defined[0] == int(value.replace("_", "")), name


def document_messages() -> list[bytes]:
    """The example exchange's messages: hex after 14 label columns, before the comment."""
    text = (ROOT / "docs" / "PROTOCOL.md").read_text()
    example = text[text.index("## 10. Example exchange") :]
    example = example[: example.index("# Part C.")]
    messages: list[list[str]] = []
    for block in re.findall(r"```\n(.*?)```", example, flags=re.S):
        for line in block.splitlines():
            label, rest = line[:14], line[14:]
            if "->" in label:
                messages.append([])
            messages[-1].extend(re.split(r"\s{3,}", rest, maxsplit=1)[0].split())
    return [bytes.fromhex("".join(m)) for m in messages]


def test_protocol_document_example_is_byte_exact() -> None:
    messages = document_messages()
    assert len(messages) == 12
    for message in messages:
        assert bytes(encode(decode(message))) == message
