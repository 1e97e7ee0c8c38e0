"""Store operations shared by the CLI and the daemon (hearthfile/services/ops.py)."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from hearthfile.services.ops import AddCounter, expand_inputs, is_regular_file, pages
from hearthfile.services.results import AddProgress


@given(st.lists(st.integers(0, 50)), st.integers(1, 100))
def test_pages_keep_order_and_stay_within_budget(sizes: list[int], budget: int) -> None:
    runs = list(pages(sizes, budget, lambda size: size))
    assert [s for run in runs for s in run] == sizes
    assert all(run for run in runs)
    for n, run in enumerate(runs):
        assert sum(run) <= budget or len(run) == 1, "only a lone value may exceed it"
        if n + 1 < len(runs):
            assert sum(run) + runs[n + 1][0] > budget, "a run ends only when the next is too big"


def test_expand_inputs_walks_directories_by_name_and_reports_the_rest(tmp_path: Path) -> None:
    top = tmp_path / "top"
    (top / "b").mkdir(parents=True)
    for rel in ("a.txt", "b/c.txt", "b/d.txt", "e.txt"):
        (top / rel).write_text(rel)
    (top / "b" / "link").symlink_to(top / "a.txt")
    os.mkfifo(top / "fifo")
    single = tmp_path / "single"
    single.write_text("x")
    files, skipped = expand_inputs([str(single), "-", str(top)])
    rel = ["b/c.txt", "b/d.txt"]
    assert files == [str(single), "-", str(top / "a.txt"), *(str(top / r) for r in rel),
                     str(top / "e.txt")]  # fmt: skip
    assert [s.split(":")[0] for s in skipped] == [str(top / "b" / "link"), str(top / "fifo")]
    assert is_regular_file(str(single)) and not is_regular_file("-")
    assert not is_regular_file(str(top / "fifo")) and not is_regular_file("/dev/null")


def test_add_counter_reports_at_most_every_interval_and_always_the_end(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 1000)
    seen: list[AddProgress] = []
    counter = AddCounter([path], seen.append, interval_s=3600)
    for _ in range(10):
        counter.advance(100)
    assert seen[0] == AddProgress(100, 1000) and seen[-1] == AddProgress(1000, 1000)
    assert len(seen) == 2, "the first report, then only the final one within the interval"
