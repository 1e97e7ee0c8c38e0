"""A download's incoming file in the store: strays (no record names them) are
removed when the node starts; named ones are kept for their download to resume."""

from __future__ import annotations

from hearthfile.blobs.store import BlobStore
from hearthfile.services.downloads.partial import drop_strays


def test_incoming_files_no_record_names_are_removed(store: BlobStore) -> None:
    kept = store.layout.partials / "incoming-aaaa1111"
    stray = store.layout.partials / "incoming-bbbb2222"
    for path in (kept, stray):
        path.write_bytes(b"x" * 10)
    tokens = ["incoming:aaaa1111:0", None, "blake3:" + "0" * 64]
    assert drop_strays(store, tokens) == 1
    assert kept.exists() and not stray.exists()
