"""The layering rules of DESIGN.md section 1, checked on the source.

Every module of the package must have a layer here: a new package or module
that is not listed fails the test instead of being skipped, and every module
named pure must exist, so a rename cannot silently drop it from the check.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "hearthfile"
PURE = [
    "address.py",
    "cids.py",
    "identity.py",
    "errors.py",
    "limits.py",
    "blobs/chunker.py",
    "transfer/fileproto.py",
    "transfer/schedule.py",
    "transfer/contenthash.py",
    "bus/frames.py",
    "bus/noise.py",
    "bus/handshake.py",
    "bus/capability.py",
    "bus/channel.py",
    "bus/session.py",
    "bus/wsmask.py",
    "gossip/records.py",
    "gossip/protocol.py",
    "gossip/index.py",
    "gossip/messages.py",
    "gossip/origins.py",
    "gossip/publisher.py",
    "trust/levels.py",
    "trust/book.py",
    "testing/gossip_sim.py",
    "testing/gossip_hostile.py",
    "testing/gossip_scenarios.py",
    "services/http/headers.py",
    "services/results.py",
    "services/downloads/core.py",
    "services/control.py",
]
IO_MODULES = {"trio", "trio_websocket", "socket", "asyncio", "time", "select", "selectors"}
#: Lower layers may not import upper ones (imports point downward only). Keys are the
#: first part of a module's path under hearthfile/ (a package or a top-level module).
LAYER = {
    "__init__": 0,
    "cids": 0,
    "identity": 0,
    "config": 0,
    "errors": 0,
    "limits": 0,
    "address": 0,
    "home": 1,
    "events": 1,
    "blobs": 1,
    "bus": 1,
    "trust": 1,
    "gossip": 2,
    "transfer": 2,
    "services": 3,
    "node": 4,
    "daemon": 4,
    "cli": 5,
    "__main__": 6,
    "cli_downloads": 5,
    # The simulation harness and fakes sit beside the tests: they may import anything,
    # and nothing in the package may import them.
    "testing": 7,
}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def layer_of(rel: Path) -> int:
    key = rel.parts[0].removesuffix(".py")
    assert key in LAYER, f"hearthfile/{rel} is in no layer: add {key!r} to LAYER"
    return LAYER[key]


def test_pure_modules_do_no_io() -> None:
    for rel in PURE:
        path = PKG / rel
        assert path.exists(), f"pure module {rel} is gone: update PURE"
        bad = {m for m in imports(path) if m.split(".")[0] in IO_MODULES}
        assert not bad, f"{rel} is pure but imports {sorted(bad)}"


def test_imports_point_downward() -> None:
    checked = 0
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG)
        layer = layer_of(rel)
        for module in imports(path):
            parts = module.split(".")
            if parts[0] != "hearthfile" or len(parts) < 2:
                continue
            target = LAYER.get(parts[1])
            assert target is not None, f"{rel} imports {module}, which is in no layer"
            assert target <= layer, f"{rel} imports upward: {module}"
            if layer < LAYER["testing"]:
                assert parts[1] != "testing", f"{rel} imports the test harness: {module}"
            checked += 1
    assert checked > 100, "the walker found almost no imports: is PKG right?"


def test_only_config_imports_yaml() -> None:
    for path in PKG.rglob("*.py"):
        if path.name != "config.py":
            assert "yaml" not in imports(path), path


def test_the_walker_sees_both_import_forms(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("import trio.lowlevel\nfrom time import monotonic\nfrom . import x\n")
    assert imports(source) == {"trio.lowlevel", "time"}


def test_an_unlisted_package_fails() -> None:
    with pytest.raises(AssertionError, match="in no layer"):
        layer_of(Path("newpart/x.py"))
