"""Bus frames: the typed messages of the call layer and their msgpack encoding (pure, sans-IO).

This module owns the byte format of every frame that travels inside one secure-channel
message (DESIGN.md section 4, docs/PROTOCOL.md "Frames"). It is the only module that
imports msgpack for the wire. It knows nothing of calls, credit or sockets: it turns a
frame dataclass into bytes and bytes back into a frame, refusing anything malformed.

Every frame is one msgpack map whose ``"t"`` key names its type; the remaining keys are
that type's fields. The encoder writes ``t`` first, then ``id``, then the other fields in
the order of the tables below, so an encoding is deterministic (the golden vectors in
tests/wire rely on it). Receivers ignore keys they do not know, which lets a later minor
version add optional fields; frame tags are append-only and a retired tag stays reserved.

====== ============================ ===========================================
tag    fields (wire keys)           sent by
====== ============================ ===========================================
req    id, cap, v [major, minor],   the caller, once, opening the call
       args (any)
res    id, body (any)               the callee, once, as the call's last frame
err    id, code, msg                the callee, once, as the call's last frame
data   id, body (any)               either side: one item of its stream
end    id                           either side: its stream has no more items
cancel id                           the caller: abandon the call
credit id, n                        either side: the peer may send n more data
====== ============================ ===========================================

Decoding is hostile-input code: every msgpack limit is set explicitly from the constants
below, extension types are refused outright, nesting depth is checked after unpacking,
and every failure -- whatever msgpack or Python raised -- comes out as
``RemoteProtocolError``. Encoding checks the same shape rules and raises
``LocalProtocolError``, so we never send what a peer following this module would refuse.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, NoReturn

import msgpack

from hearthfile.errors import WIRE_ERROR_CODES, LocalProtocolError, RemoteProtocolError

# --- limits (docs/PROTOCOL.md "Frame limits" is checked against these by a test) ---------

#: Largest encoded frame: a 256 KiB chunk plus room for the header and its item fields.
#: Equal to the channel's default ``max_message_bytes`` (hearthfile/bus/channel.py).
MAX_FRAME_BYTES: Final = 256 * 1024 + 64 * 1024
#: Largest msgpack bin: a whole frame's worth, so one chunk always fits.
MAX_BIN_BYTES: Final = MAX_FRAME_BYTES
#: Largest msgpack str (UTF-8 bytes); names, CIDs and messages are far smaller.
MAX_STR_BYTES: Final = 64 * 1024
#: Most elements in one array: a page of chunk indices; stops a 1-byte-per-element
#: array from becoming millions of Python objects.
MAX_ARRAY_LEN: Final = 65_536
#: Most keys in one map.
MAX_MAP_LEN: Final = 4_096
#: Extension types are not part of the protocol (this also refuses msgpack timestamps).
MAX_EXT_BYTES: Final = 0
#: Deepest nesting of arrays and maps, the frame map itself counting as 1; stops
#: recursion bombs in code that walks decoded values.
MAX_DEPTH: Final = 32
#: Call ids are 1 .. 2**53 - 1, so any language's double-based numbers hold them exactly.
MAX_CALL_ID: Final = 2**53 - 1
#: Each part of a capability version ``[major, minor]`` is 0 .. 65535.
MAX_VERSION_PART: Final = 65_535
#: A capability name is 1 .. 128 UTF-8 bytes.
MAX_CAP_BYTES: Final = 128
#: An error message is at most 1024 UTF-8 bytes: a hint for humans, never a traceback.
MAX_ERROR_MSG_BYTES: Final = 1024
#: One credit frame grants 1 .. 65535 more data frames.
MAX_CREDIT_GRANT: Final = 65_535

#: Every frame tag ever assigned, in order of assignment (append-only; retire, never reuse).
FRAME_TAGS: Final = ("req", "res", "err", "data", "end", "cancel", "credit")

# Initial size of the encoder's private buffer: most control frames fit, and a big
# body grows it once, so a 256 KiB bin is copied exactly once.
_ENCODE_BUFFER_BYTES: Final = 1024


# --- frame types ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """``req``: open call ``call_id`` on capability ``cap`` at ``version``."""

    TAG: ClassVar[str] = "req"
    call_id: int
    cap: str
    version: tuple[int, int]
    args: Any = None


@dataclass(frozen=True, slots=True)
class Response:
    """``res``: the call succeeded with ``body``; the callee's last frame for it."""

    TAG: ClassVar[str] = "res"
    call_id: int
    body: Any = None


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """``err``: the call failed with wire code ``code``; the callee's last frame for it."""

    TAG: ClassVar[str] = "err"
    call_id: int
    code: str
    msg: str = ""


@dataclass(frozen=True, slots=True)
class Data:
    """``data``: one stream item, in either direction."""

    TAG: ClassVar[str] = "data"
    call_id: int
    body: Any = None


@dataclass(frozen=True, slots=True)
class End:
    """``end``: the sender's stream for this call has no more items."""

    TAG: ClassVar[str] = "end"
    call_id: int


@dataclass(frozen=True, slots=True)
class Cancel:
    """``cancel``: the caller abandons the call; nothing more is sent for it."""

    TAG: ClassVar[str] = "cancel"
    call_id: int


@dataclass(frozen=True, slots=True)
class Credit:
    """``credit``: the receiver allows ``n`` more ``data`` frames on this call."""

    TAG: ClassVar[str] = "credit"
    call_id: int
    n: int


Frame = Request | Response | ErrorResponse | Data | End | Cancel | Credit


# --- encoding ------------------------------------------------------------------------------


def encode(frame: Frame) -> memoryview:
    """Encode one frame. Raises ``LocalProtocolError`` if it breaks a limit or holds a
    value msgpack cannot carry (a bug of ours, or a handler returning an odd type).

    The result is a read-only view of the encoder's private buffer: a large bin in a
    body is copied once, into that buffer, and never again on its way to the channel.
    """
    fields = _fields_of(frame)
    problem = _shape_problem(fields)
    if problem is not None:
        raise LocalProtocolError(f"cannot send {frame.TAG} frame: {problem}")
    try:
        # The decoder's own field checks, so both ends apply one definition of "valid".
        _PARSERS[frame.TAG](fields)
    except RemoteProtocolError as exc:
        raise LocalProtocolError(f"cannot send: {exc}") from None
    packer = msgpack.Packer(autoreset=False, use_bin_type=True, buf_size=_ENCODE_BUFFER_BYTES)
    try:
        packer.pack(fields)
    except (TypeError, ValueError, OverflowError) as exc:
        raise LocalProtocolError(f"cannot send {frame.TAG} frame: {exc}") from exc
    view: memoryview = packer.getbuffer()
    if view.nbytes > MAX_FRAME_BYTES:
        raise LocalProtocolError(f"{frame.TAG} frame of {view.nbytes} bytes exceeds the limit")
    return view


def _fields_of(frame: Frame) -> dict[str, Any]:
    # Insertion order is the wire order: "t", "id", then the fields.
    match frame:
        case Request(call_id, cap, (major, minor), args):
            return {"t": "req", "id": call_id, "cap": cap, "v": [major, minor], "args": args}
        case Response(call_id, body):
            return {"t": "res", "id": call_id, "body": body}
        case ErrorResponse(call_id, code, msg):
            return {"t": "err", "id": call_id, "code": code, "msg": msg}
        case Data(call_id, body):
            return {"t": "data", "id": call_id, "body": body}
        case Credit(call_id, n):
            return {"t": "credit", "id": call_id, "n": n}
        case End(call_id) | Cancel(call_id):
            return {"t": frame.TAG, "id": call_id}
    raise LocalProtocolError(f"not a frame: {frame!r}")


# --- decoding ------------------------------------------------------------------------------


class _ExtensionRefused(Exception):
    """Raised inside msgpack's unpacker when an ext type appears (caught at once)."""


def _refuse_ext(code: int, data: bytes) -> NoReturn:
    raise _ExtensionRefused(f"msgpack extension type {code} is not allowed")


def decode(data: bytes | bytearray | memoryview) -> Frame:
    """Decode one frame from one channel message. Raises only ``RemoteProtocolError``."""
    size = memoryview(data).nbytes
    if size > MAX_FRAME_BYTES:
        raise RemoteProtocolError(f"frame of {size} bytes exceeds {MAX_FRAME_BYTES}")
    raw = _unpack(data)
    problem = _shape_problem(raw)
    if problem is not None:
        raise RemoteProtocolError(f"malformed frame: {problem}")
    if not isinstance(raw, dict):
        raise RemoteProtocolError(f"frame is a {type(raw).__name__}, not a map")
    tag = raw.get("t")
    parse = _PARSERS.get(tag) if isinstance(tag, str) else None
    if parse is None:
        raise RemoteProtocolError(f"unknown frame tag {tag!r}")
    return parse(raw)


def _unpack(data: bytes | bytearray | memoryview) -> Any:
    # msgpack raises ValueError, TypeError, UnicodeDecodeError, its own exceptions and
    # more on bad input; this one call is wrapped so that all of them mean "bad frame".
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_bin_len=MAX_BIN_BYTES,
            max_str_len=MAX_STR_BYTES,
            max_array_len=MAX_ARRAY_LEN,
            max_map_len=MAX_MAP_LEN,
            max_ext_len=MAX_EXT_BYTES,
            ext_hook=_refuse_ext,
        )
    except Exception as exc:
        raise RemoteProtocolError(f"undecodable frame: {type(exc).__name__}") from exc


_CONTAINERS: Final = (dict, list, tuple)
_SIZED_LEAVES: Final = frozenset({str, bytes, bytearray, memoryview})
#: A str of n characters has at most 4n UTF-8 bytes: shorter ones need no encoding to check.
_SHORT_STR_CHARS: Final = MAX_STR_BYTES // 4


def _shape_problem(value: Any) -> str | None:
    """What makes ``value`` unfit for a frame (depth, sizes, map keys), or None.

    Iterative, so a hostile depth cannot exhaust the Python stack. It runs on every
    frame both ways, so it visits containers only and looks closer at a leaf only when
    it is a long string or bin; decoded values are already bounded by msgpack, so for
    them this mostly guards depth.
    """
    if not isinstance(value, _CONTAINERS):
        return _leaf_problem(value)
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"nested deeper than {MAX_DEPTH}"
        if isinstance(item, dict):
            if len(item) > MAX_MAP_LEN:
                return f"map of {len(item)} keys exceeds {MAX_MAP_LEN}"
            for key in item:
                if type(key) is not str or len(key) > _SHORT_STR_CHARS:
                    problem = _key_problem(key)
                    if problem is not None:
                        return problem
            children: Any = item.values()
        else:
            if len(item) > MAX_ARRAY_LEN:
                return f"array of {len(item)} elements exceeds {MAX_ARRAY_LEN}"
            children = item
        for child in children:
            if isinstance(child, _CONTAINERS):
                stack.append((child, depth + 1))
            elif type(child) in _SIZED_LEAVES and len(child) > _SHORT_STR_CHARS:
                problem = _leaf_problem(child)
                if problem is not None:
                    return problem
    return None


def _key_problem(key: Any) -> str | None:
    if not isinstance(key, str):
        return f"map key of type {type(key).__name__}, not a string"
    return _leaf_problem(key)


def _leaf_problem(item: Any) -> str | None:
    if isinstance(item, str):
        if len(item) > _SHORT_STR_CHARS and _utf8_len(item) > MAX_STR_BYTES:
            return f"string longer than {MAX_STR_BYTES} bytes"
    elif (
        isinstance(item, bytes | bytearray | memoryview) and memoryview(item).nbytes > MAX_BIN_BYTES
    ):
        return f"bin longer than {MAX_BIN_BYTES} bytes"
    return None


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


# --- field validation ----------------------------------------------------------------------


def _field(raw: Mapping[str, Any], key: str) -> Any:
    if key not in raw:
        raise RemoteProtocolError(f"{raw['t']} frame lacks field {key!r}")
    return raw[key]


def _uint(raw: Mapping[str, Any], key: str, low: int, high: int) -> int:
    value = _field(raw, key)
    # bool is an int in Python but a distinct type on the wire.
    if type(value) is not int or not low <= value <= high:
        raise RemoteProtocolError(f"{raw['t']} field {key!r} must be an integer {low}..{high}")
    return value


def _text(raw: Mapping[str, Any], key: str, low: int, high: int) -> str:
    value = _field(raw, key)
    if not isinstance(value, str) or not low <= _utf8_len(value) <= high:
        raise RemoteProtocolError(
            f"{raw['t']} field {key!r} must be a string of {low}..{high} UTF-8 bytes"
        )
    return value


def _call_id(raw: Mapping[str, Any]) -> int:
    return _uint(raw, "id", 1, MAX_CALL_ID)


def _version(raw: Mapping[str, Any]) -> tuple[int, int]:
    value = _field(raw, "v")
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(type(part) is int and 0 <= part <= MAX_VERSION_PART for part in value)
    ):
        raise RemoteProtocolError("req field 'v' must be [major, minor] with parts 0..65535")
    return (value[0], value[1])


def _parse_req(raw: Mapping[str, Any]) -> Request:
    cap = _text(raw, "cap", 1, MAX_CAP_BYTES)
    return Request(_call_id(raw), cap, _version(raw), _field(raw, "args"))


def _parse_res(raw: Mapping[str, Any]) -> Response:
    return Response(_call_id(raw), _field(raw, "body"))


def _parse_err(raw: Mapping[str, Any]) -> ErrorResponse:
    code = _text(raw, "code", 1, MAX_STR_BYTES)
    if code not in WIRE_ERROR_CODES:
        raise RemoteProtocolError(f"err code {code[:32]!r} is not a wire error code")
    return ErrorResponse(_call_id(raw), code, _text(raw, "msg", 0, MAX_ERROR_MSG_BYTES))


def _parse_data(raw: Mapping[str, Any]) -> Data:
    return Data(_call_id(raw), _field(raw, "body"))


def _parse_end(raw: Mapping[str, Any]) -> End:
    return End(_call_id(raw))


def _parse_cancel(raw: Mapping[str, Any]) -> Cancel:
    return Cancel(_call_id(raw))


def _parse_credit(raw: Mapping[str, Any]) -> Credit:
    return Credit(_call_id(raw), _uint(raw, "n", 1, MAX_CREDIT_GRANT))


_PARSERS: Final[dict[str, Callable[[Mapping[str, Any]], Frame]]] = {
    "req": _parse_req,
    "res": _parse_res,
    "err": _parse_err,
    "data": _parse_data,
    "end": _parse_end,
    "cancel": _parse_cancel,
    "credit": _parse_credit,
}
