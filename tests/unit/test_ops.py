"""Store operations shared by the CLI and the daemon (hearthfile/services/ops.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hearthfile.services.ops import pages


@given(st.lists(st.integers(0, 50)), st.integers(1, 100))
def test_pages_keep_order_and_stay_within_budget(sizes: list[int], budget: int) -> None:
    runs = list(pages(sizes, budget, lambda size: size))
    assert [s for run in runs for s in run] == sizes
    assert all(run for run in runs)
    for n, run in enumerate(runs):
        assert sum(run) <= budget or len(run) == 1, "only a lone value may exceed it"
        if n + 1 < len(runs):
            assert sum(run) + runs[n + 1][0] > budget, "a run ends only when the next is too big"
