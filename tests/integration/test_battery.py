"""The reliability battery's quick run (scripts/battery.py): kill -9 rounds, fuzz,
hostile peers and a lost and corrupt index, checking every acknowledged byte.
The full run (more rounds, the fault proxy, a full disk) is run by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_quick_battery_loses_nothing(tmp_path: Path) -> None:
    summary_file = tmp_path / "battery.json"
    argv = [sys.executable, str(ROOT / "scripts" / "battery.py"), "--seed", "7", "--quick",
            "--only", "crash", "--rounds", "6", "--only", "fuzz", "--fuzz-seconds", "3",
            "--only", "hostile", "--only", "index", "--json", str(summary_file)]  # fmt: skip
    run = subprocess.run(argv, capture_output=True, timeout=600, check=False)
    assert summary_file.exists(), run.stderr.decode()[-3000:]
    summary = json.loads(summary_file.read_text())
    phases = summary["phases"]
    for name, phase in phases.items():
        assert phase["failed_checks"] == [], (name, phase["failed_checks"])
        assert phase["lost"] == 0 and phase["corrupt"] == 0, name
    # The scenarios happened: faults were injected and acknowledged bytes were checked.
    # Six rounds are one cycle of the crash plan, so a get and a push (each acknowledged
    # by an add before its fault) are among them whatever the kills interrupt.
    assert phases["crash"]["faults"] == 6 and phases["crash"]["bytes_checked"] > 0
    assert phases["index"]["faults"] == 2 and phases["index"]["bytes_checked"] > 0
    assert phases["hostile"]["faults"] == 5 and phases["hostile"]["bytes_checked"] > 0
    assert phases["fuzz"]["rounds"] > 0
    assert run.returncode == 0
