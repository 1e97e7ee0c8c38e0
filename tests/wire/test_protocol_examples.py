"""The file-service example of docs/PROTOCOL.md (part C) recomputed, and the forms it
states: data frames carry ``body``, a NodeID is lowercase unpadded base32."""

from __future__ import annotations

import re
from pathlib import Path

import msgpack

from hearthfile.blobs.chunker import chunk_blob
from hearthfile.bus.frames import Data, encode
from hearthfile.identity import NodeKey

ROOT = Path(__file__).resolve().parents[2]


def example() -> str:
    text = (ROOT / "docs" / "PROTOCOL.md").read_text()
    part = text[text.index("### Example: B fetches a 300,000-byte blob from A") :]
    return part[: part.index("## Node control")]


def test_the_manifest_size_in_the_example_is_what_a_300000_byte_blob_encodes_to() -> None:
    manifest, chunks = chunk_blob(bytes(300_000), name="a.bin")
    size = len(manifest.encode())
    text = example()
    assert f'"manifest":<bin {size}>,"manifest_size":{size}' in text
    assert [len(c) for c in chunks] == [int(n) for n in re.findall(r'"data":<bin (\d+)>', text)]
    # Any content of that length gives the same size: CIDs have one length.
    other, _ = chunk_blob(b"\xff" * 300_000, name="a.bin")
    assert len(other.encode()) == size


def test_data_frames_carry_body_as_in_the_example() -> None:
    frame = msgpack.unpackb(bytes(encode(Data(1, {"i": 0}))))
    assert list(frame) == ["t", "id", "body"]
    text = example()
    assert '"item"' not in text
    assert text.count('"t":"data","id":') == text.count('"t":"data","id":1,"body"') + text.count(
        '"t":"data","id":3,"body"'
    )


def test_a_node_id_is_hf_and_lowercase_unpadded_base32() -> None:
    node_id = str(NodeKey.generate().node_id)
    assert node_id.startswith("hf") and len(node_id) == 54
    assert re.fullmatch(r"hf[a-z2-7]{52}", node_id)
    protocol = (ROOT / "docs" / "PROTOCOL.md").read_text()
    assert "**lowercase**, **no padding**, so 52 characters, 54 with `hf`" in protocol
