"""``Output.stream_rows`` writes page by page the same bytes ``rows`` writes at once."""

from __future__ import annotations

import pytest

from hearthfile.cids import Cid
from hearthfile.cli.output import Output
from hearthfile.services.results import PinState


def _rows(n: int) -> list[PinState]:
    return [PinState(Cid(f"blake3:{i:064x}"), pinned=i % 2 == 0) for i in range(n)]


@pytest.mark.parametrize("json_mode", [False, True])
@pytest.mark.parametrize("sizes", [[], [1], [3, 3, 1], [2, 5]])
def test_stream_rows_writes_what_rows_writes(
    capsys: pytest.CaptureFixture[str], json_mode: bool, sizes: list[int]
) -> None:
    rows = _rows(sum(sizes))
    pages, start = [], 0
    for size in sizes:
        pages.append(rows[start : start + size])
        start += size
    out = Output(json_mode=json_mode)

    def text(r: PinState) -> str:
        return f"{r.cid} {r.pinned}"

    out.rows(rows, text)
    whole = capsys.readouterr().out
    out.stream_rows(iter(pages), text)
    assert capsys.readouterr().out == whole
