"""Content identifiers and canonical encodings (pure).

A CID is ``blake3:<64 lowercase hex>``: the BLAKE3 digest of a chunk's bytes,
or of a manifest's canonical encoding for a blob. CIDs arrive from users and
peers, so parsing is strict: only the exact form is accepted, which also keeps
a CID from ever being mistaken for a path on disk.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Final, NewType

import blake3
import msgpack

from hearthfile.errors import HearthError

Cid = NewType("Cid", str)

PREFIX: Final = "blake3:"
DIGEST_BYTES: Final = 32
_CID_RE: Final = re.compile(r"blake3:[0-9a-f]{64}")


class CidError(HearthError, ValueError):
    """Text that is not a well-formed CID."""


def parse_cid(text: str) -> Cid:
    """Return ``text`` as a Cid, or raise CidError saying what is wrong."""
    if not isinstance(text, str) or _CID_RE.fullmatch(text) is None:
        shown = text if isinstance(text, str) and len(text) <= 80 else f"{str(text)[:77]}..."
        raise CidError(f"malformed CID {shown!r}: expected 'blake3:' and 64 lowercase hex digits")
    return Cid(text)


def is_cid(text: object) -> bool:
    return isinstance(text, str) and _CID_RE.fullmatch(text) is not None


def cid_from_digest(digest: bytes) -> Cid:
    if len(digest) != DIGEST_BYTES:
        raise CidError(f"a BLAKE3 digest is {DIGEST_BYTES} bytes, got {len(digest)}")
    return Cid(PREFIX + digest.hex())


def cid_of(data: bytes | bytearray | memoryview) -> Cid:
    """The CID of some bytes (one BLAKE3 pass)."""
    return cid_from_digest(blake3.blake3(data).digest())


def hex_of(cid: Cid) -> str:
    """The 64 hex digits of a CID (its name on disk)."""
    return cid[len(PREFIX) :]


CanonicalValue = (
    None | bool | int | str | bytes | Sequence["CanonicalValue"] | Mapping[str, "CanonicalValue"]
)


def canonical_encode(value: CanonicalValue) -> bytes:
    """Deterministic msgpack: map keys sorted, floats refused, smallest int forms.

    Two encoders agree byte for byte on these rules, so the BLAKE3 of the result
    is a stable identifier for the value.
    """
    return msgpack.packb(_canonical(value), use_bin_type=True)  # type: ignore[no-any-return]


def _canonical(value: CanonicalValue) -> object:
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("canonical maps have string keys only")
        return {k: _canonical(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if value is None or isinstance(value, (bool, int, str, bytes)):
        return value
    raise TypeError(f"{type(value).__name__} has no canonical encoding")


def _refuse_ext(code: int, data: bytes) -> object:
    raise ValueError("msgpack ext types are not allowed")


def canonical_decode(data: bytes, *, max_items: int) -> object:
    """Decode msgpack written by ``canonical_encode``; raises ValueError on anything else.

    Every unpack limit is set so a hostile document cannot make us allocate more
    than its own size suggests; the re-encode check refuses non-canonical forms,
    so one value has exactly one accepted encoding.
    """
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            ext_hook=_refuse_ext,
            max_bin_len=len(data),
            max_str_len=len(data),
            max_array_len=max_items,
            max_map_len=64,
            max_ext_len=0,
        )
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as exc:
        raise ValueError(f"not valid msgpack: {exc}") from exc
    try:
        canonical = canonical_encode(value) == data  # floats anywhere raise TypeError
    except TypeError:
        canonical = False
    if not canonical:
        raise ValueError("not in canonical form")
    return value
