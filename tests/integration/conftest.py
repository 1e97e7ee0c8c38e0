from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.nodes import Daemon


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Callable[[str], Daemon]]:
    nodes: list[Daemon] = []

    def make(name: str) -> Daemon:
        node = Daemon(tmp_path / name)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        if node.proc is not None:
            node.proc.kill()
            node.proc.wait()
