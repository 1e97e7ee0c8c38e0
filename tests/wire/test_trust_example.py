"""The joining worked example of docs/PROTOCOL.md (part E, section 5), recomputed from
its fixed keys and secret, byte for byte, in both directions."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from hearthfile.cids import canonical_encode
from hearthfile.identity import NodeKey
from hearthfile.trust.introductions import decode_introduction, sign_introduction
from hearthfile.trust.invites import Token, decode_token, encode_token, join_key
from hearthfile.trust.levels import TrustLevel

ROOT = Path(__file__).resolve().parents[2]
TEXT = (ROOT / "docs" / "PROTOCOL.md").read_text()
PART_E = TEXT[TEXT.index("# Part E.") :]
EXAMPLE = PART_E[PART_E.index("## 5. Worked example") :]
SNAPSHOT_MS = 1767225600000


def blocks() -> dict[str, bytes]:
    found: dict[str, list[str]] = {}
    for block in re.findall(r"```\n(.*?)```", EXAMPLE, flags=re.S):
        label = ""
        for line in block.splitlines():
            if line[:8].strip():
                label = line[:8].strip()
                found[label] = []
            found[label].append(line[8:].strip())
    return {label: bytes.fromhex("".join(parts)) for label, parts in found.items()}


def test_join_example_is_byte_exact() -> None:
    b = blocks()
    assert set(b) == {"token", "id", "key", "proof", "args", "intro", "isig"}
    inviter = NodeKey.from_private_bytes(bytes(range(32)))
    joiner = NodeKey.from_private_bytes(bytes(range(32, 64)))
    assert str(inviter.node_id) in EXAMPLE and str(joiner.node_id) in EXAMPLE
    secret = bytes(range(0x40, 0x50))
    token = Token(inviter.node_id, TrustLevel.MEMBER, 1767229200, secret, ("127.0.0.1:4001",))
    text = encode_token(token)
    assert text in EXAMPLE and decode_token(text) == token
    body = text.removeprefix("hfinv1").upper()
    assert base64.b32decode(body + "=" * (-len(body) % 8)) == b["token"]
    assert token.invite_id == b["id"] and join_key(secret) == b["key"]
    assert token.proof(joiner.node_id) == b["proof"]
    assert canonical_encode({"id": b["id"], "proof": b["proof"]}) == b["args"]

    intro = sign_introduction(
        inviter.sign, inviter.node_id, joiner.node_id, 1, SNAPSHOT_MS, SNAPSHOT_MS
    )
    assert intro.signed_bytes() == b["intro"] and intro.signature == b["isig"]
    wire = intro.encode()
    assert len(canonical_encode(wire)) == 173
    assert decode_introduction(wire).verify()
