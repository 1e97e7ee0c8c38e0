"""Node identity: Ed25519 node keys, NodeIDs, signatures (pure + key file I/O).

Owns the self-certifying node identifier of DESIGN.md section 2 and the node's
private key on disk. Everything else that needs "who is this" or "is this
signed by them" goes through ``NodeId`` and ``NodeKey``.

NodeID text form
----------------
``"hf"`` followed by the RFC 4648 base32 encoding of the 32-byte Ed25519
public key, lowercase, without ``=`` padding: always 54 characters, e.g.
``hfaaaqeayeaudaocajbifqydiob4ibceqtcqkrmfyydenbwha5dypq`` (the key bytes
00..1f). Parsing is strict: anything else, including uppercase and a final
character with stray low bits, is rejected, so one key has exactly one text.

Key file format
---------------
UTF-8 text. Blank lines and lines starting with ``#`` are ignored; exactly one
other line must remain::

    ed25519:<64 lowercase hex digits>

the 32-byte Ed25519 private key (the RFC 8032 seed). ``save`` adds comment
lines naming the NodeID so an operator can tell key files apart. The file must
be a regular file with no group or other permission bits (like ssh's private
keys); ``load`` refuses anything else and says how to fix it. A future format
uses a different tag than ``ed25519:``.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from hearthfile.errors import HearthError

# cryptography loads when a key is used, not with this module: a NodeId is parsed
# and printed by commands that never sign or verify (``ls`` starts faster).
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

NODE_ID_PREFIX: Final = "hf"
PUBLIC_KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
#: 32 bytes are 256 bits: 52 base32 characters once the padding is dropped.
_NODE_ID_BODY_CHARS: Final = 52
_BASE32_ALPHABET: Final = frozenset("abcdefghijklmnopqrstuvwxyz234567")
_SHORT_CHARS: Final = 12

KEY_FILE_TAG: Final = "ed25519:"
#: A key file is a few hundred bytes; a huge file is certainly not one.
_MAX_KEY_FILE_BYTES: Final = 4096


class IdentityError(HearthError):
    """A node key file is missing, unsafe or malformed; the message says how to fix it."""


@dataclass(frozen=True, slots=True, order=True, repr=False)
class NodeId:
    """A node's identity: its Ed25519 public key. Hashable, ordered, verifies signatures."""

    public_key: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.public_key, bytes) or len(self.public_key) != PUBLIC_KEY_BYTES:
            raise ValueError(f"a NodeId holds a {PUBLIC_KEY_BYTES}-byte Ed25519 public key")

    @classmethod
    def parse(cls, text: str) -> NodeId:
        """Parse the text form strictly; raises ValueError saying what is wrong."""
        if not isinstance(text, str):
            raise ValueError(f"NodeID must be text, got {type(text).__name__}")
        shown = text if len(text) <= 64 else text[:60] + "..."
        if not text.startswith(NODE_ID_PREFIX):
            raise ValueError(f"NodeID must start with {NODE_ID_PREFIX!r}: {shown!r}")
        body = text[len(NODE_ID_PREFIX) :]
        if len(body) != _NODE_ID_BODY_CHARS:
            raise ValueError(
                f"NodeID must be {NODE_ID_PREFIX!r} and {_NODE_ID_BODY_CHARS} base32 characters"
                f" ({len(NODE_ID_PREFIX) + _NODE_ID_BODY_CHARS} in all), got {len(text)}: {shown!r}"
            )
        if not _BASE32_ALPHABET.issuperset(body):
            raise ValueError(f"NodeID may only use a-z and 2-7 after {NODE_ID_PREFIX!r}: {shown!r}")
        node_id = cls(base64.b32decode(body.upper() + "===="))
        # 52 characters carry 260 bits; the last 4 must be zero or two texts
        # would name the same key.
        if str(node_id) != text:
            raise ValueError(f"NodeID is not in canonical form (bad last character): {shown!r}")
        return node_id

    def __str__(self) -> str:
        encoded = base64.b32encode(self.public_key).decode("ascii").rstrip("=").lower()
        return NODE_ID_PREFIX + encoded

    def __repr__(self) -> str:
        return f"NodeId({str(self)!r})"

    def short(self) -> str:
        """A short prefix for logs: enough to tell peers apart, not to authenticate them."""
        return str(self)[:_SHORT_CHARS]

    def verify(self, data: bytes, signature: bytes) -> bool:
        """True when ``signature`` is this node's Ed25519 signature of ``data``."""
        if len(signature) != SIGNATURE_BYTES:
            return False
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, data)
        except (InvalidSignature, ValueError):
            # ValueError: the 32 bytes are not a valid curve point, so nothing verifies.
            return False
        return True


class NodeKey:
    """A node's Ed25519 private key. Its repr never shows the secret."""

    __slots__ = ("_node_id", "_private")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        self._private = private_key
        public = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self._node_id = NodeId(public)

    @classmethod
    def generate(cls) -> NodeKey:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, seed: bytes) -> NodeKey:
        """From the 32-byte RFC 8032 private key (seed)."""
        if len(seed) != PUBLIC_KEY_BYTES:
            raise ValueError(f"an Ed25519 private key is {PUBLIC_KEY_BYTES} bytes, got {len(seed)}")
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def node_id(self) -> NodeId:
        return self._node_id

    @property
    def public_bytes(self) -> bytes:
        return self._node_id.public_key

    def sign(self, data: bytes) -> bytes:
        """Ed25519 signature (64 bytes, deterministic) of ``data``."""
        return self._private.sign(data)

    def private_bytes(self) -> bytes:
        """The 32-byte private key. Handle with care: it is the node's identity."""
        from cryptography.hazmat.primitives import serialization as ser

        raw = ser.Encoding.Raw
        return self._private.private_bytes(raw, ser.PrivateFormat.Raw, ser.NoEncryption())

    def __repr__(self) -> str:
        return f"NodeKey(node_id={self._node_id})"

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Write the key file atomically with mode 0600 (see the module docstring).

        Refuses to replace an existing key unless ``overwrite``: losing a node
        key loses the node's identity and every peer's trust in it.
        """
        target = Path(path)
        if not overwrite and target.exists():
            raise IdentityError(f"{target} already exists; refusing to overwrite a node key")
        try:
            _write_atomically(target, self._file_text().encode("utf-8"))
        except OSError as exc:
            raise IdentityError(f"cannot write node key {target}: {exc.strerror or exc}") from exc

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NodeKey:
        """Read a key file, refusing one that group or others can access, or a malformed one."""
        source = Path(path)
        try:
            fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise IdentityError(
                f"no node key at {source}; create one with `hearthfile init`"
            ) from exc
        except OSError as exc:
            raise IdentityError(f"cannot open node key {source}: {exc.strerror or exc}") from exc
        try:
            # fstat on the opened descriptor: checks the file we read, not
            # whatever the path points at a moment later.
            _check_key_file_mode(source, os.fstat(fd))
            raw = os.read(fd, _MAX_KEY_FILE_BYTES + 1)
        finally:
            os.close(fd)
        return cls.from_private_bytes(_parse_key_file(source, raw))

    def _file_text(self) -> str:
        return (
            "# hearthfile node key (Ed25519). Keep it secret: mode 0600, never share it.\n"
            f"# node id: {self._node_id}\n"
            f"{KEY_FILE_TAG}{self.private_bytes().hex()}\n"
        )


def _check_key_file_mode(path: Path, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise IdentityError(f"node key {path} is not a regular file")
    loose = stat.S_IMODE(info.st_mode) & 0o077
    if loose:
        raise IdentityError(
            f"node key {path} is accessible by group or others (mode "
            f"{stat.S_IMODE(info.st_mode):04o}); anyone who reads it can impersonate this "
            f"node. Fix it with: chmod 600 {path}"
        )


def _parse_key_file(path: Path, raw: bytes) -> bytes:
    """The 32-byte seed from a key file's bytes; IdentityError naming the problem."""
    if len(raw) > _MAX_KEY_FILE_BYTES:
        raise IdentityError(f"node key {path} is too large to be a key file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IdentityError(f"node key {path} is not UTF-8 text") from exc
    lines = [line.strip() for line in text.splitlines()]
    data = [line for line in lines if line and not line.startswith("#")]
    expected = f"one line '{KEY_FILE_TAG}<64 hex digits>'"
    if len(data) != 1 or not data[0].startswith(KEY_FILE_TAG):
        raise IdentityError(f"node key {path} is malformed: expected {expected}")
    hex_text = data[0][len(KEY_FILE_TAG) :]
    try:
        seed = binascii.unhexlify(hex_text)
    except (binascii.Error, ValueError) as exc:
        raise IdentityError(f"node key {path} is malformed: expected {expected}") from exc
    if len(seed) != PUBLIC_KEY_BYTES or hex_text != hex_text.lower():
        raise IdentityError(f"node key {path} is malformed: expected {expected}")
    return seed


def _write_atomically(target: Path, content: bytes) -> None:
    """Temp file beside the target (mode 0600 from creation), fsync, rename, fsync the dir."""
    directory = target.parent
    temp = directory / f".{target.name}.{secrets.token_hex(6)}.tmp"
    # O_EXCL with a random name: never follow or reuse a file someone else made.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    renamed = False
    try:
        try:
            os.fchmod(fd, 0o600)  # the umask can only narrow 0600; make it exact
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)
        renamed = True
    finally:
        if not renamed:
            temp.unlink(missing_ok=True)
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
