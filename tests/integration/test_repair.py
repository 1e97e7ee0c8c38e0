"""``verify --repair``: a damaged blob is fetched again from the peers that hold it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import blake3

from tests.integration.nodes import Daemon
from tests.integration.test_node import pair
from tests.unit.test_chunker import payload

CS = 256 * 1024


def corrupt_a_file_of(data_dir: Path, content: bytes) -> Path:
    """Flip one byte of a store file holding ``content`` or one of its 256 KiB chunks,
    whichever the layout keeps (a file per chunk, or a file per blob); its path."""
    wanted = {blake3.blake3(content).digest()}
    wanted |= {blake3.blake3(content[i : i + CS]).digest() for i in range(0, len(content), CS)}
    for path in sorted((data_dir / "blobs").rglob("*")):
        if path.is_file() and path.stat().st_size in (CS, len(content)):
            data = path.read_bytes()
            if blake3.blake3(data).digest() in wanted:
                with open(path, "r+b") as stream:
                    stream.seek(len(data) // 2)
                    stream.write(bytes([data[len(data) // 2] ^ 0xFF]))
                return path
    raise AssertionError(f"no file of the blob under {data_dir}")


def test_verify_repair_fetches_the_damaged_blob_again(
    make_node: Callable[[str], Daemon], tmp_path: Path
) -> None:
    a, b = pair(make_node, "member", "member")
    content = payload(5 * CS + 777, 21)
    src = tmp_path / "src.bin"
    src.write_bytes(content)
    cid = a.ok("add", str(src)).split()[-1]
    b.ok("get", cid, "-o", str(tmp_path / "first.bin"))
    corrupt_a_file_of(b.home / "data", content)

    repaired = b.cli("--json", "verify", "--repair")
    assert repaired.returncode == 0, repaired.stderr
    report = json.loads(repaired.out)
    assert report["affected"] == [cid], "the corruption was found"
    assert (report["repaired"], report["no_source"], report["repair_failed"]) == ([cid], [], [])
    assert b.cli("cat", cid).stdout == content
    assert json.loads(b.ok("--json", "verify"))["clean"]

    # Again with its only holder gone: the blob is named as having no source, exit 1.
    a.stop()
    corrupt_a_file_of(b.home / "data", content)
    lost = b.cli("verify", "--repair")
    assert lost.returncode == 1, lost.stderr
    assert f"no source: {cid}" in lost.out.splitlines()
    assert f"affected blob: {cid}" in lost.stderr
    assert b.cli("cat", cid).returncode == 1, "nothing unverified is served"


def test_verify_repair_needs_the_node(make_node: Callable[[str], Daemon], tmp_path: Path) -> None:
    node = make_node("a")
    src = tmp_path / "src.bin"
    src.write_bytes(payload(2 * CS, 3))
    cid = node.ok("add", str(src)).split()[-1]
    refused = node.cli("verify", "--repair")
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"hearthfile: verify --repair needs the running node (no daemon runs for {node.home}): "
        "start it with 'hearthfile run'"
    ]
    assert node.cli("cat", cid).stdout == src.read_bytes(), "nothing was touched"
