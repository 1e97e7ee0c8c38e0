"""The layering rules of DESIGN.md section 1, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "hearthfile"
PURE = [
    "cids.py", "identity.py", "blobs/chunker.py", "blobs/fileproto.py", "blobs/schedule.py",
    "bus/frames.py", "bus/noise.py", "bus/handshake.py", "bus/capability.py", "bus/channel.py",
    "bus/session.py", "bus/wsmask.py", "gossip/records.py", "gossip/protocol.py", "gossip/index.py",
    "gossip/sim.py", "gossip/messages.py", "gossip/origins.py", "gossip/publisher.py",
    "trust/levels.py", "trust/book.py",
    "gossip/sim_hostile.py", "gossip/sim_scenarios.py",
]
IO_MODULES = {"trio", "trio_websocket", "socket", "asyncio", "time", "select", "selectors"}
#: Lower layers may not import upper ones (imports point downward only).
LAYER = {"cids": 0, "identity": 0, "config": 0, "errors": 0, "blobs": 1, "bus": 1, "trust": 1,
         "gossip": 2,
         "services": 3, "daemon": 4, "cli": 5}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_pure_modules_do_no_io() -> None:
    for rel in PURE:
        path = PKG / rel
        if not path.exists():
            continue
        bad = {m for m in imports(path) if m.split(".")[0] in IO_MODULES}
        assert not bad, f"{rel} is pure but imports {sorted(bad)}"


def test_imports_point_downward() -> None:
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG)
        layer = LAYER.get(rel.parts[0].removesuffix(".py"))
        if layer is None:
            continue
        for module in imports(path):
            parts = module.split(".")
            if parts[0] != "hearthfile" or len(parts) < 2:
                continue
            target = LAYER.get(parts[1])
            assert target is None or target <= layer, f"{rel} imports upward: {module}"


def test_only_config_imports_yaml() -> None:
    for path in PKG.rglob("*.py"):
        if path.name != "config.py":
            assert "yaml" not in imports(path), path


def test_the_walker_sees_both_import_forms(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("import trio.lowlevel\nfrom time import monotonic\nfrom . import x\n")
    assert imports(source) == {"trio.lowlevel", "time"}
