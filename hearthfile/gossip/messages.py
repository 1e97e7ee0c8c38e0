"""Gossip wire messages: Digest and Records, with their strict codec (pure).

Owns the two messages of one ``gossip.exchange`` (DESIGN.md section 6) as
plain dataclasses, their encoding to msgpack-ready values (the bus frame codec
carries them as call arguments and results) and their hostile-input decoding.
Record bytes and signatures belong to gossip/records.py.

=========  ===========================================  ===========================
message    wire form (a map; ``t`` names it)            sent by
=========  ===========================================  ===========================
digest     ``{t: "digest", e: [[key, aseq, nseq]...]}``  the initiator of a round
records    ``{t: "records", r: [record...],              the responder (its reply),
           w: [[key, aseq, nseq]...]}``                 or the initiator (a push)
=========  ===========================================  ===========================

A digest entry is a node's 32-byte public key, the seq of the newest advert
record we hold from it and the seq of its node record we hold (0: none). The
``w`` (want) entries of a reply are the responder's own entries for the
origins where the initiator is ahead, so the initiator can push what the
responder lacks: push and pull in one round trip plus one one-way message.
Unknown map keys are ignored, so a later version may add fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from hearthfile.errors import RemoteProtocolError
from hearthfile.gossip.records import MAX_SEQ, Record, RecordError, decode_record, encode_record
from hearthfile.identity import PUBLIC_KEY_BYTES
from hearthfile.limits import MAX_DIGEST_ENTRIES

# MAX_DIGEST_ENTRIES (limits.py): entries in one digest or want list, which keeps a
# digest (about 53 bytes an entry) inside the smallest frame the bus allows; the
# largest ``gossip.max_origins``.
#: Records in one message; each costs at least ~150 bytes, so the byte budget
#: (``gossip.max_exchange_bytes``) binds first. This bounds the object count.
MAX_MESSAGE_RECORDS: Final = 2048

#: One digest entry: (newest advert seq, node record seq), 0 meaning none.
Versions = tuple[int, int]
#: Digest entries keyed by the origin's public key (``NodeId.public_key``): bytes
#: hash once and compare in C, which matters when a thousand-entry digest is
#: compared on every exchange.
Entries = Mapping[bytes, Versions]


class MessageError(RemoteProtocolError):
    """A value that is not a well-formed gossip message; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"malformed gossip message: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Digest:
    """What the sender holds: ``{origin key: (advert seq, node seq)}``.

    ``entries`` is treated as immutable once the digest is built; the core
    shares one mapping between the digests it sends until its state changes.
    """

    entries: Entries
    wire_bytes: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        # {"t": "digest", "e": [...]}: fixmap, two 1-char keys, a 6-char value.
        object.__setattr__(self, "wire_bytes", 1 + 2 + 7 + 2 + _entries_bytes(self.entries))


@dataclass(frozen=True, slots=True)
class Records:
    """Records the receiver lacks, and (in a reply) the responder's wants."""

    records: tuple[Record, ...]
    want: Entries = field(default_factory=dict)
    wire_bytes: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        size = 1 + 2 + 8 + 2 + _array_header(len(self.records)) + 2 + _entries_bytes(self.want)
        size += sum(r.wire_bytes for r in self.records)
        object.__setattr__(self, "wire_bytes", size)


Message = Digest | Records


def encode_message(message: Message) -> dict[str, object]:
    """The message as msgpack-ready values (lists, bytes, str, int)."""
    if isinstance(message, Digest):
        return {"t": "digest", "e": _encode_entries(message.entries)}
    return {
        "t": "records",
        "r": [encode_record(r) for r in message.records],
        "w": _encode_entries(message.want),
    }


def decode_message(value: object) -> Message:
    """Parse a decoded msgpack value. Raises only ``MessageError``.

    A malformed record makes the whole message malformed: honest nodes relay
    only records they parsed, so its sender is broken or hostile.
    """
    if not isinstance(value, Mapping):
        raise MessageError("not a map")
    tag = value.get("t")
    if tag == "digest":
        return Digest(_decode_entries(value.get("e")))
    if tag == "records":
        raw = value.get("r")
        if not isinstance(raw, list | tuple) or len(raw) > MAX_MESSAGE_RECORDS:
            raise MessageError(f"r must be an array of at most {MAX_MESSAGE_RECORDS} records")
        try:
            records = tuple(decode_record(r) for r in raw)
        except RecordError as exc:
            raise MessageError(exc.reason) from exc
        return Records(records, _decode_entries(value.get("w", [])))
    raise MessageError("unknown message type")


def _encode_entries(entries: Entries) -> list[list[object]]:
    return [[key, a, n] for key, (a, n) in entries.items()]


def _decode_entries(raw: object) -> dict[bytes, Versions]:
    if not isinstance(raw, list | tuple) or len(raw) > MAX_DIGEST_ENTRIES:
        raise MessageError(f"entries must be an array of at most {MAX_DIGEST_ENTRIES}")
    entries: dict[bytes, Versions] = {}
    for item in raw:
        if not isinstance(item, list | tuple) or len(item) != 3:
            raise MessageError("an entry is [key, advert seq, node seq]")
        key, a, n = item
        if type(key) is not bytes or len(key) != PUBLIC_KEY_BYTES:
            raise MessageError(f"an entry key must be {PUBLIC_KEY_BYTES} bytes")
        if not (_is_seq(a) and _is_seq(n)):
            raise MessageError(f"entry seqs must be integers 0..{MAX_SEQ}")
        if key in entries:  # two claims for one origin: which would we believe?
            raise MessageError("an origin appears twice")
        entries[key] = (a, n)
    return entries


def _is_seq(value: object) -> bool:
    # bool is an int subclass in Python but a different msgpack type.
    return type(value) is int and 0 <= value <= MAX_SEQ


def _entries_bytes(entries: Entries) -> int:
    # Each entry: fixarray(3), bin8 header + 32 key bytes, two msgpack ints.
    ints = sum(_int_bytes(a) + _int_bytes(n) for a, n in entries.values())
    return _array_header(len(entries)) + len(entries) * 35 + ints


def _array_header(n: int) -> int:
    return 1 if n < 16 else 3 if n < 65536 else 5


def _int_bytes(n: int) -> int:
    """Bytes of a non-negative msgpack int in its smallest form."""
    if n < 128:
        return 1
    if n < 256:
        return 2
    if n < 65536:
        return 3
    return 5 if n < 2**32 else 9
