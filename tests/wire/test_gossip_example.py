"""The gossip worked example of docs/PROTOCOL.md (part D, section 5), recomputed
from its fixed key: the signed bytes, the signatures and the digest, byte for byte."""

from __future__ import annotations

import re
from pathlib import Path

import msgpack

from hearthfile.cids import cid_of, parse_cid
from hearthfile.gossip.messages import Digest, decode_message, encode_message
from hearthfile.gossip.records import decode_record, encode_record, sign_advert, sign_node
from hearthfile.identity import NodeKey

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT_MS = 1767225600000  # 2026-01-01T00:00:00Z
ADDRESS = "127.0.0.1:4001"


def document_blocks() -> dict[str, bytes]:
    """Label -> bytes of the example's hex blocks (a label line, then continuation lines)."""
    text = (ROOT / "docs" / "PROTOCOL.md").read_text()
    example = text[text.index("# Part D.") :]
    example = example[example.index("## 5. Worked example") :]
    example = example.split("\n# Part ", 1)[0]  # up to the next part
    found: dict[str, list[str]] = {}
    for block in re.findall(r"```\n(.*?)```", example, flags=re.S):
        label = ""
        for line in block.splitlines():
            if line[:8].strip():
                label = line[:8].strip()
                found[label] = []
            found[label].append(line[8:].strip())
    return {label: bytes.fromhex("".join(parts)) for label, parts in found.items()}


def test_document_example_is_byte_exact() -> None:
    blocks = document_blocks()
    assert set(blocks) == {"advert", "node", "sig", "digest"}
    text = (ROOT / "docs" / "PROTOCOL.md").read_text()
    key = NodeKey.from_private_bytes(bytes(range(32)))
    me = key.node_id
    assert str(me) in text
    blob = parse_cid("blake3:89bf54607f523510e90c03283955550565eb5413ba5f96613176b118820445c6")
    assert blob == cid_of(b"hello, hearthfile\n")
    advert = sign_advert(
        key.sign,
        me,
        seq=SNAPSHOT_MS,
        prev=0,
        timestamp_ms=SNAPSHOT_MS,
        addresses=[ADDRESS],
        added=[blob],
        full=True,
    )
    node = sign_node(
        key.sign,
        me,
        seq=SNAPSHOT_MS + 1,
        timestamp_ms=SNAPSHOT_MS + 1,
        addresses=[ADDRESS],
        snapshot_seq=SNAPSHOT_MS,
    )
    assert blocks["advert"] == advert.payload and len(advert.payload) == 127
    assert blocks["node"] == node.payload and len(node.payload) == 96
    hexes = re.findall(r"^sig +([0-9a-f]+)\n +([0-9a-f]+)$", text, flags=re.M)
    assert [bytes.fromhex(a + b) for a, b in hexes] == [advert.signature, node.signature]
    assert advert.verify() and node.verify()
    for record, size in ((advert, 193), (node, 162)):
        wire = msgpack.packb(encode_record(record), use_bin_type=True)
        assert len(wire) == size == record.wire_bytes
        assert decode_record(msgpack.unpackb(wire, raw=False)) == record
    digest = Digest({me.public_key: (advert.seq, node.seq)})
    wire = msgpack.packb(encode_message(digest), use_bin_type=True)
    assert blocks["digest"] == wire and len(wire) == 66 == digest.wire_bytes
    assert decode_message(msgpack.unpackb(wire, raw=False)) == digest
