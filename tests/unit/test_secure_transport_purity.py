"""The secure transport's cores stay pure: no trio, sockets, event loops or clocks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import hearthfile

PACKAGE = Path(hearthfile.__file__).parent
PURE_MODULES = ["bus/noise.py", "bus/handshake.py", "identity.py"]
FORBIDDEN = {"trio", "trio_websocket", "socket", "asyncio", "time"}


def imported_modules(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_imports_nothing_forbidden(module: str) -> None:
    imported = imported_modules((PACKAGE / module).read_text())
    offending = {name for name in imported if name.split(".")[0] in FORBIDDEN}
    assert not offending, f"{module} imports {sorted(offending)}"


def test_the_walker_sees_both_import_forms() -> None:
    found = imported_modules("import trio.lowlevel\nfrom time import monotonic\n")
    assert found == {"trio.lowlevel", "time"}
