"""A command imports only what it uses: the modules real CLI processes had loaded.

Start-up is mostly imports (BENCHMARKS.md, "CLI start-up"): trio alone is about a
third of a ``status``. Each test also checks that its command did what it says, so
a command that failed early (and so imported little) cannot pass.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Result
from tests.integration.nodes import Daemon

MISSING = "blake3:" + "0" * 64
STORE = "hearthfile.blobs.store"


def loaded(home: Path, *args: str) -> tuple[Result, set[str]]:
    """``hearthfile --home HOME ARGS`` in a fresh process: its result, and every module
    it had imported when ``main`` returned."""
    dump = home.parent / "modules.json"
    dump.unlink(missing_ok=True)
    program = (
        "import json, sys\n"
        "from hearthfile.cli import main\n"
        "code = main(sys.argv[1:])\n"
        f"open({str(dump)!r}, 'w').write(json.dumps(sorted(sys.modules)))\n"
        "sys.exit(code)\n"
    )
    argv = [sys.executable, "-c", program, "--home", str(home), *args]
    proc = subprocess.run(argv, capture_output=True, timeout=120, check=False)
    return Result(proc.returncode, proc.stdout, proc.stderr.decode()), set(
        json.loads(dump.read_text())
    )


def test_a_command_that_asks_the_daemon_loads_neither_store_nor_config(
    make_node: Callable[[str], Daemon],
) -> None:
    node = make_node("a").start()
    result, modules = loaded(node.home, "--json", "status")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.out)["node_id"] == node.node_id
    assert "trio" in modules and "hearthfile.bus.client" in modules, "it asked the daemon"
    assert not {STORE, "hearthfile.config", "yaml", "sqlite3"} & modules


def test_cat_of_a_held_blob_reads_the_daemons_store_without_trio(
    make_node: Callable[[str], Daemon], tmp_path: Path
) -> None:
    node = make_node("a").start()
    src = tmp_path / "held.bin"
    src.write_bytes(b"held here " * 10_000)
    cid = node.ok("add", str(src)).strip().splitlines()[-1]
    result, modules = loaded(node.home, "cat", cid)
    assert result.returncode == 0, result.stderr
    assert result.stdout == src.read_bytes()
    assert STORE in modules and not {"trio", "hearthfile.services.results"} & modules
    # Not held: the command asks the daemon to fetch it (no source knows it here).
    result, modules = loaded(node.home, "cat", MISSING)
    assert result.returncode == 1 and "not found" in result.stderr
    assert "trio" in modules and "hearthfile.bus.client" in modules


def test_failures_keep_their_line_and_exit_code_whatever_was_imported(home: Path) -> None:
    result, modules = loaded(home, "status")  # no daemon: nothing to ask, no store
    assert (result.returncode, result.stderr) == (1, f"hearthfile: no daemon running for {home}\n")
    assert STORE not in modules
    result, modules = loaded(home, "--json", "cat", MISSING)  # an error of the store's
    assert result.returncode == 1 and STORE in modules, result.stderr
    assert json.loads(result.stderr) == {
        "code": "not_found",
        "error": f"not found: {MISSING}",
        "exit_code": 1,
    }
    result, modules = loaded(home, "--json", "run", "--listen", "nowhere")
    assert result.returncode == 2 and "hearthfile.config" in modules, result.stderr
    assert json.loads(result.stderr)["exit_code"] == 2
