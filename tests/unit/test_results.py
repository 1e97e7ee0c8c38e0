"""The node's typed results: one encoding at the bus seam, one decoding in the CLI."""

from __future__ import annotations

import pytest

from hearthfile.cli.output import as_json, human_bytes, iso_time, text_field
from hearthfile.errors import RemoteProtocolError
from hearthfile.services.results import BlobEntry, GcResult, Holder, from_wire, to_wire

ENTRY = BlobEntry(
    cid="blake3:" + "a" * 64,  # type: ignore[arg-type]
    size=700_000,
    chunks=3,
    content="blake3:" + "b" * 64,  # type: ignore[arg-type]
    pinned=True,
    complete=True,
    name="photo.jpg",
    mime="image/jpeg",
    added_at=1_700_000_000.25,
    last_access=1_700_000_001.0,
)


def test_results_round_trip_through_their_wire_form() -> None:
    for result in (ENTRY, GcResult(removed=[], bytes_freed=3), Holder("hfx", 1.5, online=False)):
        assert from_wire(type(result), to_wire(result)) == result


def test_a_newer_node_may_add_fields_but_not_drop_them() -> None:
    assert from_wire(Holder, {"node_id": "hfx", "age_s": 2.0, "online": True, "new": 1})
    with pytest.raises(RemoteProtocolError, match="missing online"):
        from_wire(Holder, {"node_id": "hfx", "age_s": 2.0})
    with pytest.raises(RemoteProtocolError, match="expected a map"):
        from_wire(Holder, ["hfx", 2.0, True])


def test_json_has_iso_times_and_byte_counts() -> None:
    shown = as_json(ENTRY)
    assert isinstance(shown, dict)
    assert shown["added_at"] == "2023-11-14T22:13:20.250Z"
    assert shown["size"] == 700_000


def test_text_has_human_sizes_and_iso_times() -> None:
    assert human_bytes(512) == "512 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(700_000) == "683.6 KiB"
    assert human_bytes(3 * 1024**4) == "3.0 TiB"
    assert text_field(BlobEntry, "size", 700_000) == "683.6 KiB (700000 bytes)"
    assert text_field(BlobEntry, "last_access", 0) == iso_time(0) == "1970-01-01T00:00:00.000Z"
    assert text_field(BlobEntry, "name", None) == "-"
