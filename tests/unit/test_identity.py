"""NodeId text form, signatures, and the node key file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hearthfile.identity import IdentityError, NodeId, NodeKey

FIXED_SEED = bytes(range(32))


def test_text_form_is_hf_and_lowercase_base32_without_padding() -> None:
    node_id = NodeId(bytes(range(32)))
    text = str(node_id)
    assert text == "hfaaaqeayeaudaocajbifqydiob4ibceqtcqkrmfyydenbwha5dypq"
    assert len(text) == 54 and "=" not in text
    assert node_id.short() == text[:12]
    assert repr(node_id) == f"NodeId({text!r})"


@given(st.binary(min_size=32, max_size=32))
def test_text_round_trips(key: bytes) -> None:
    node_id = NodeId(key)
    assert NodeId.parse(str(node_id)) == node_id


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "must start with 'hf'"),
        ("xxaaaqeayeaudaocajbifqydiob4ibceqtcqkrmfyydenbwha5dypq", "must start with 'hf'"),
        ("hfaaaq", "52 base32 characters"),
        ("hfaaaqeayeaudaocajbifqydiob4ibceqtcqkrmfyydenbwha5dypqq", "52 base32 characters"),
        ("hfAAAQEAYEAUDAOCAJBIFQYDIOB4IBCEQTCQKRMFYYDENBWHA5DYPQ", "a-z and 2-7"),
        ("hfaaaqeayeaudaocajbifqydiob4ibceqtcqkrmfyydenbwha5dyp1", "a-z and 2-7"),
        ("hfaaaqeayeaudaocajbifqydiob4ibceqtcqkrmfyydenbwha5dyp=", "a-z and 2-7"),
        ("hfaaaqeayeaudaocajbifqydiob4ibceqtcqkrmfyydenbwha5dypr", "canonical"),
    ],
)
def test_parse_rejects_with_a_reason(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        NodeId.parse(text)


@given(st.text(max_size=80))
def test_parse_of_garbage_raises_only_value_error(text: str) -> None:
    try:
        node_id = NodeId.parse(text)
    except ValueError:
        return
    assert str(node_id) == text


def test_node_id_needs_32_bytes() -> None:
    with pytest.raises(ValueError):
        NodeId(b"short")


def test_node_ids_are_hashable_and_ordered() -> None:
    a, b = NodeId(bytes(32)), NodeId(bytes([1]) + bytes(31))
    assert {a: 1, b: 2}[NodeId(bytes(32))] == 1
    assert sorted([b, a]) == [a, b]


def test_sign_and_verify() -> None:
    key = NodeKey.from_private_bytes(FIXED_SEED)
    signature = key.sign(b"hello")
    assert len(signature) == 64
    assert key.node_id.verify(b"hello", signature)
    assert not key.node_id.verify(b"hellO", signature)
    assert not key.node_id.verify(b"hello", signature[:-1] + bytes([signature[-1] ^ 1]))
    assert not key.node_id.verify(b"hello", b"short")
    assert not NodeKey.generate().node_id.verify(b"hello", signature)


def test_key_repr_hides_the_secret() -> None:
    key = NodeKey.from_private_bytes(FIXED_SEED)
    assert FIXED_SEED.hex() not in repr(key)
    assert str(key.node_id) in repr(key)


def test_key_file_round_trip_and_mode(tmp_path: Path) -> None:
    key = NodeKey.generate()
    path = tmp_path / "node.key"
    key.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = NodeKey.load(path)
    assert loaded.node_id == key.node_id
    assert loaded.private_bytes() == key.private_bytes()
    text = path.read_text()
    assert str(key.node_id) in text  # operators can tell key files apart
    assert [p.name for p in tmp_path.iterdir()] == ["node.key"]  # no temp file left


def test_save_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    first, second = NodeKey.generate(), NodeKey.generate()
    first.save(path)
    with pytest.raises(IdentityError, match="already exists"):
        second.save(path)
    assert NodeKey.load(path).node_id == first.node_id
    second.save(path, overwrite=True)
    assert NodeKey.load(path).node_id == second.node_id


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o666])
def test_load_refuses_a_key_others_can_access(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "node.key"
    NodeKey.generate().save(path)
    os.chmod(path, mode)
    with pytest.raises(IdentityError, match=f"chmod 600 {path}"):
        NodeKey.load(path)


def test_load_accepts_owner_read_only(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    key = NodeKey.generate()
    key.save(path)
    os.chmod(path, 0o400)
    assert NodeKey.load(path).node_id == key.node_id


def test_load_of_a_missing_file_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="hearthfile init"):
        NodeKey.load(tmp_path / "absent.key")


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"# only a comment\n",
        b"ed25519:" + b"ab" * 31 + b"\n",
        b"ed25519:" + b"AB" * 32 + b"\n",
        b"ed25519:" + b"zz" * 32 + b"\n",
        b"rsa:" + b"ab" * 32 + b"\n",
        b"ed25519:" + b"ab" * 32 + b"\ned25519:" + b"ab" * 32 + b"\n",
        b"\xff\xfe not text",
        b"#" * 5000,
    ],
)
def test_load_refuses_malformed_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "node.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, content)
    os.close(fd)
    with pytest.raises(IdentityError, match=r"malformed|not UTF-8|too large"):
        NodeKey.load(path)


def test_load_refuses_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "dir.key"
    path.mkdir(mode=0o700)
    with pytest.raises(IdentityError):
        NodeKey.load(path)


def test_hand_written_file_with_comments_loads(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"# mine\n\n  ed25519:" + FIXED_SEED.hex().encode() + b"  \n# end\n")
    os.close(fd)
    assert NodeKey.load(path).node_id == NodeKey.from_private_bytes(FIXED_SEED).node_id
