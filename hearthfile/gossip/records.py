"""Signed gossip records: what a node holds and where it listens (pure).

Owns the two record types of DESIGN.md section 6, the exact bytes their
signatures cover, and their strict codec to and from msgpack-ready values. It
knows nothing of peers, rounds or acceptance rules (gossip/origins.py).

Records
-------
An *advert record* says what its origin holds: ``full`` records list the
origin's complete set (a snapshot), the others list CIDs ``added`` and
``removed`` since the record whose seq is ``prev``. A snapshot too large for one
record is a full record followed by ordinary add-only records, so every record
of an origin is either the start of a chain (``full``, ``prev`` 0) or its next
link. A *node record* is the origin's heartbeat and address card: its listen
addresses and ``snapshot_seq``, the seq of the full record its current chain
starts from, which lets receivers refuse an older chain replayed to them.

Signed bytes
------------
``canonical_encode`` (deterministic msgpack) of a fixed-order array whose first
element is a domain tag, so no record signature can pass for another kind of
hearthfile signature, nor one kind of record for the other::

    ["hearthfile/advert/1", origin key (bin 32), seq, prev, timestamp_ms,
     [address...], [added CID digest (bin 32)...], [removed CID digest...], full]
    ["hearthfile/node/1", node key (bin 32), seq, timestamp_ms,
     [address...], snapshot_seq]

On the wire a record is the same array with the 64-byte Ed25519 signature
appended. A receiver drops the last element, re-encodes the rest canonically
and verifies against the key in the record: the NodeID alone is enough. CIDs
travel as their 32 raw digest bytes (34 bytes each on the wire, not 73), in
strictly increasing order, so one set has exactly one encoding and duplicates
are impossible; ``added`` and ``removed`` are disjoint.

Sequence numbers
----------------
``seq = max(last_seq + 1, now_ms)`` (``next_seq``), one counter per node shared
by both record kinds. It needs no state on disk: a restarted node starts at its
clock, which is past every seq it issued before, because it never issues seqs
faster than one per millisecond for long (publishing is rate limited). A clock
set back across a restart would make the new records look old; the node then
learns its old seq from its own records relayed back to it and jumps past it
(gossip/publisher.py). Timestamps are ``max(now_ms, last_timestamp_ms)``, never
decreasing along a node's records.

Decoding is hostile-input code: every field is type-checked (a bool is not an
int), every size bounded by the constants below, and any failure is a
``RecordError`` carrying a short reason, never another exception.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from hearthfile.cids import (
    DIGEST_BYTES,
    Cid,
    canonical_encode,
    cid_from_digest,
    hex_of,
    is_cid,
)
from hearthfile.config import parse_address
from hearthfile.errors import RemoteProtocolError
from hearthfile.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, NodeId
from hearthfile.limits import MAX_RECORD_CIDS

ADVERT_TAG: Final = "hearthfile/advert/1"
NODE_TAG: Final = "hearthfile/node/1"

#: Listen addresses in one record: a dual-stack host with a few interfaces.
MAX_ADDRESSES: Final = 8
#: ``host:port`` in UTF-8; 253 is the longest DNS name, plus the port.
MAX_ADDRESS_BYTES: Final = 262
# MAX_RECORD_CIDS (limits.py): CIDs (added + removed) one record may carry on the
# wire; the configured ``gossip.max_cids_per_record`` may not exceed it.
#: Seqs and timestamps are msgpack int64-safe.
MAX_SEQ: Final = 2**63 - 1
#: Bytes a record adds to its signed payload on the wire: bin8 header and signature.
SIGNATURE_WIRE_BYTES: Final = 2 + SIGNATURE_BYTES

#: A callable that signs bytes with the node's key (``NodeKey.sign``); cores
#: hold this, never the key.
Sign = Callable[[bytes], bytes]


class RecordError(RemoteProtocolError):
    """A value that is not a well-formed record; ``reason`` says which rule it broke."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"malformed gossip record: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AdvertRecord:
    """An origin's signed statement of what it holds (see the module docstring)."""

    origin: NodeId
    seq: int
    prev: int
    timestamp_ms: int
    addresses: tuple[str, ...]
    added: tuple[Cid, ...]
    removed: tuple[Cid, ...]
    full: bool
    signature: bytes
    #: The signed bytes, computed once: verification and sizing both need them.
    payload: bytes = field(init=False, repr=False, compare=False)
    #: Exact size of this record's msgpack encoding on the wire.
    wire_bytes: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        payload = canonical_encode(
            [
                ADVERT_TAG,
                self.origin.public_key,
                self.seq,
                self.prev,
                self.timestamp_ms,
                list(self.addresses),
                [_digest(c) for c in self.added],
                [_digest(c) for c in self.removed],
                self.full,
            ]
        )
        object.__setattr__(self, "payload", payload)
        object.__setattr__(self, "wire_bytes", len(payload) + SIGNATURE_WIRE_BYTES)

    def verify(self) -> bool:
        return self.origin.verify(self.payload, self.signature)


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """A node's signed heartbeat: where it listens and which chain is current."""

    origin: NodeId
    seq: int
    timestamp_ms: int
    addresses: tuple[str, ...]
    snapshot_seq: int
    signature: bytes
    payload: bytes = field(init=False, repr=False, compare=False)
    wire_bytes: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        payload = canonical_encode(
            [
                NODE_TAG,
                self.origin.public_key,
                self.seq,
                self.timestamp_ms,
                list(self.addresses),
                self.snapshot_seq,
            ]
        )
        object.__setattr__(self, "payload", payload)
        object.__setattr__(self, "wire_bytes", len(payload) + SIGNATURE_WIRE_BYTES)

    def verify(self) -> bool:
        return self.origin.verify(self.payload, self.signature)


Record = AdvertRecord | NodeRecord


def next_seq(last_seq: int, now_ms: int) -> int:
    """The seq scheme of the module docstring: survives restarts without saved state."""
    return max(last_seq + 1, now_ms)


def sign_advert(
    sign: Sign,
    origin: NodeId,
    *,
    seq: int,
    prev: int,
    timestamp_ms: int,
    addresses: Sequence[str],
    added: Iterable[Cid] = (),
    removed: Iterable[Cid] = (),
    full: bool = False,
) -> AdvertRecord:
    """Build and sign an advert record; CIDs are sorted here. ValueError on a bad field."""
    adds, removes = tuple(sorted(set(added))), tuple(sorted(set(removed)))
    if not all(is_cid(c) for c in adds + removes):
        raise ValueError("not a CID")
    unsigned = AdvertRecord(
        origin, seq, prev, timestamp_ms, tuple(addresses), adds, removes, full, b""
    )
    _check_advert(unsigned, ValueError)
    return replace(unsigned, signature=_signed(unsigned.payload, sign))


def sign_node(
    sign: Sign,
    origin: NodeId,
    *,
    seq: int,
    timestamp_ms: int,
    addresses: Sequence[str],
    snapshot_seq: int,
) -> NodeRecord:
    """Build and sign a node record. ValueError on a bad field."""
    unsigned = NodeRecord(origin, seq, timestamp_ms, tuple(addresses), snapshot_seq, b"")
    _check_node(unsigned, ValueError)
    return replace(unsigned, signature=_signed(unsigned.payload, sign))


def _signed(payload: bytes, sign: Sign) -> bytes:
    signature = sign(payload)
    if len(signature) != SIGNATURE_BYTES:
        raise ValueError(f"a signature is {SIGNATURE_BYTES} bytes, got {len(signature)}")
    return signature


# --- wire codec -----------------------------------------------------------------------------


def encode_record(record: Record) -> list[object]:
    """The record as msgpack-ready values: its signed array plus the signature."""
    if isinstance(record, AdvertRecord):
        return [
            ADVERT_TAG,
            record.origin.public_key,
            record.seq,
            record.prev,
            record.timestamp_ms,
            list(record.addresses),
            [_digest(c) for c in record.added],
            [_digest(c) for c in record.removed],
            record.full,
            record.signature,
        ]
    return [
        NODE_TAG,
        record.origin.public_key,
        record.seq,
        record.timestamp_ms,
        list(record.addresses),
        record.snapshot_seq,
        record.signature,
    ]


def decode_record(value: object) -> Record:
    """Parse a decoded msgpack value into a record. Raises only ``RecordError``.

    Checks shape, types and sizes; not the signature, freshness or anything else
    that needs the receiver's state (gossip/origins.py does).
    """
    if not isinstance(value, list | tuple) or not value:
        raise RecordError("not an array")
    tag = value[0]
    if tag == ADVERT_TAG:
        advert = _decode_advert(value)
        _check_advert(advert, RecordError)
        return advert
    if tag == NODE_TAG:
        node = _decode_node(value)
        _check_node(node, RecordError)
        return node
    raise RecordError("unknown record tag")


def _decode_advert(v: Sequence[object]) -> AdvertRecord:
    if len(v) != 10:
        raise RecordError("an advert record has 10 elements")
    return AdvertRecord(
        origin=_node_id(v[1]),
        seq=_int(v[2], "seq"),
        prev=_int(v[3], "prev"),
        timestamp_ms=_int(v[4], "timestamp_ms"),
        addresses=_addresses(v[5]),
        added=_cids(v[6], "added"),
        removed=_cids(v[7], "removed"),
        full=_bool(v[8], "full"),
        signature=_signature(v[9]),
    )


def _decode_node(v: Sequence[object]) -> NodeRecord:
    if len(v) != 7:
        raise RecordError("a node record has 7 elements")
    return NodeRecord(
        origin=_node_id(v[1]),
        seq=_int(v[2], "seq"),
        timestamp_ms=_int(v[3], "timestamp_ms"),
        addresses=_addresses(v[4]),
        snapshot_seq=_int(v[5], "snapshot_seq"),
        signature=_signature(v[6]),
    )


# --- field rules, shared by the signer (ValueError) and the decoder (RecordError) ----------


def _check_advert(r: AdvertRecord, error: Callable[[str], Exception]) -> None:
    if not 1 <= r.seq <= MAX_SEQ:
        raise error(f"seq must be 1..{MAX_SEQ}")
    if not 0 <= r.timestamp_ms <= MAX_SEQ:
        raise error("timestamp_ms out of range")
    # A chain starts at a full record (prev 0); every other record names its predecessor.
    if r.full and (r.prev != 0 or r.removed):
        raise error("a full record has prev 0 and removes nothing")
    if not r.full and not 1 <= r.prev < r.seq:
        raise error("prev must be 1..seq-1")
    if len(r.added) + len(r.removed) > MAX_RECORD_CIDS:
        raise error(f"more than {MAX_RECORD_CIDS} CIDs")
    if not set(r.added).isdisjoint(r.removed):
        raise error("a CID is both added and removed")
    _check_addresses(r.addresses, error)


def _check_node(r: NodeRecord, error: Callable[[str], Exception]) -> None:
    if not 1 <= r.seq <= MAX_SEQ:
        raise error(f"seq must be 1..{MAX_SEQ}")
    if not 0 <= r.timestamp_ms <= MAX_SEQ:
        raise error("timestamp_ms out of range")
    if not 0 <= r.snapshot_seq <= r.seq:
        raise error("snapshot_seq must be 0..seq")
    _check_addresses(r.addresses, error)


def _check_addresses(addresses: Sequence[str], error: Callable[[str], Exception]) -> None:
    if len(addresses) > MAX_ADDRESSES:
        raise error(f"more than {MAX_ADDRESSES} addresses")
    for address in addresses:
        if not _is_address(address):
            raise error("an address is not host:port")


def _is_address(text: object) -> bool:
    if not isinstance(text, str) or not text.isascii() or not text.isprintable():
        return False
    if not 0 < len(text) <= MAX_ADDRESS_BYTES or " " in text:
        return False
    try:
        return parse_address(text).port > 0  # port 0 means "any": nothing to dial
    except ValueError:
        return False


def _node_id(value: object) -> NodeId:
    if type(value) is not bytes or len(value) != PUBLIC_KEY_BYTES:
        raise RecordError(f"origin must be {PUBLIC_KEY_BYTES} bytes")
    return NodeId(value)


def _int(value: object, name: str) -> int:
    # bool is an int subclass in Python but a different msgpack type.
    if type(value) is not int or not 0 <= value <= MAX_SEQ:
        raise RecordError(f"{name} must be an integer 0..{MAX_SEQ}")
    return value


def _bool(value: object, name: str) -> bool:
    if type(value) is not bool:
        raise RecordError(f"{name} must be a boolean")
    return value


def _signature(value: object) -> bytes:
    if type(value) is not bytes or len(value) != SIGNATURE_BYTES:
        raise RecordError(f"signature must be {SIGNATURE_BYTES} bytes")
    return value


def _addresses(value: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or len(value) > MAX_ADDRESSES:
        raise RecordError(f"addresses must be an array of at most {MAX_ADDRESSES}")
    return tuple(value)  # each one is checked by _check_addresses


def _cids(value: object, name: str) -> tuple[Cid, ...]:
    if not isinstance(value, list | tuple) or len(value) > MAX_RECORD_CIDS:
        raise RecordError(f"{name} must be an array of at most {MAX_RECORD_CIDS} CIDs")
    previous = b""
    for digest in value:
        if type(digest) is not bytes or len(digest) != DIGEST_BYTES:
            raise RecordError(f"{name} holds a value that is not a {DIGEST_BYTES}-byte digest")
        # Strictly increasing: one set, one encoding, no duplicates.
        if digest <= previous:
            raise RecordError(f"{name} is not in strictly increasing order")
        previous = digest
    return tuple(cid_from_digest(d) for d in value)


def _digest(cid: Cid) -> bytes:
    return bytes.fromhex(hex_of(cid))
