"""The command line as scripts and people expect it (DESIGN.md section 8), without a
daemon: --json everywhere, JSON errors, ISO times, get's care for existing files,
inclusive ranges, closed pipes, and one-line errors for homes that cannot be used."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.unit.test_chunker import payload

ISO = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_json_for_every_data_command_and_errors_as_json(home: Path, tmp_path: Path) -> None:
    init = json.loads(run_cli(home, "--json", "init").out)
    assert init["home"] == str(home)
    assert json.loads(run_cli(home, "--json", "id").out) == {"node_id": init["node_id"]}
    src = tmp_path / "a.txt"
    src.write_bytes(b"hello\n")
    [cid] = json.loads(run_cli(home, "--json", "add", str(src)).out)["cids"]
    stat = json.loads(run_cli(home, "stat", cid, "--json").out)
    assert stat["size"] == 6 and stat["pinned"] is True, "added blobs are pinned"
    assert re.match(ISO, stat["added_at"]) and re.match(ISO, stat["last_access"])
    got = json.loads(run_cli(home, "--json", "get", cid, "-o", str(tmp_path / "out")).out)
    assert got["path"] == str(tmp_path / "out") and got["size"] == 6
    other = "hf" + "a" * 52
    trust = run_cli(home, "--json", "trust", other, "--level", "member")
    assert trust.returncode == 0, trust.stderr
    assert json.loads(trust.out) == {"level": "member", "node_id": other}
    missing = run_cli(home, "--json", "cat", "blake3:" + "0" * 64)
    assert missing.returncode == 1 and missing.stdout == b""
    error = json.loads(one_line(missing.stderr))
    assert error["code"] == "not_found" and error["exit_code"] == 1
    assert "not found" in error["error"]
    usage = run_cli(home, "--json", "get", cid, "--range", "x")
    assert usage.returncode == 2 and json.loads(one_line(usage.stderr))["exit_code"] == 2
    text = run_cli(home, "stat", cid).out
    assert "6 B (6 bytes)" in text, "sizes in human units in text"


def test_trust_refuses_the_nodes_own_id(home: Path) -> None:
    node_id = json.loads(run_cli(home, "--json", "init").out)["node_id"]
    refused = run_cli(home, "trust", node_id, "--level", "trusted")
    assert refused.returncode == 1 and "itself" in one_line(refused.stderr)
    assert not (home / "trust.json").exists()


def test_get_never_overwrites_and_ranges_are_inclusive(home: Path, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    data = payload(600_000, 5)
    src.write_bytes(data)
    cid = run_cli(home, "add", str(src)).out.split()[-1]
    dest = tmp_path / "dest.bin"
    dest.write_bytes(b"precious")
    refused = run_cli(home, "get", cid, "-o", str(dest))
    assert refused.returncode == 1 and "--force" in one_line(refused.stderr)
    assert dest.read_bytes() == b"precious"
    assert run_cli(home, "get", cid, "-o", str(dest), "--force").returncode == 0
    assert dest.read_bytes() == data
    part = tmp_path / "part"
    assert run_cli(home, "get", cid, "--range", "10-19", "-o", str(part)).returncode == 0
    assert part.read_bytes() == data[10:20], "START-END includes END, like HTTP"
    last = run_cli(home, "get", cid, "--range", f"599990-{len(data) - 1}", "-o", "-")
    assert last.stdout == data[599_990:]
    beyond = run_cli(home, "get", cid, "--range", f"10-{len(data)}", "-o", str(tmp_path / "x"))
    assert beyond.returncode == 1 and "outside" in one_line(beyond.stderr)
    assert not (tmp_path / "x").exists()
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "hearthfile", "--home", str(home), "get", cid, "--range", "0-4"],
        cwd=work,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout == data[:5]
    assert list(work.iterdir()) == [], "a range without -o goes to stdout, not a file"


def test_closed_pipe_is_quiet_and_a_full_device_is_one_error(home: Path, tmp_path: Path) -> None:
    src = tmp_path / "big"
    src.write_bytes(payload(8 * 1024 * 1024, 9))
    cid = run_cli(home, "add", str(src)).out.split()[-1]
    command = [sys.executable, "-m", "hearthfile", "--home", str(home), "cat", cid]
    cat = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert cat.stdout is not None
    assert len(cat.stdout.read(10)) == 10
    cat.stdout.close()  # as `| head -c 10` does
    _, err = cat.communicate(timeout=60)
    assert cat.returncode == 0 and err == b"", err.decode()
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    with open("/dev/full", "wb") as full:
        result = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, timeout=60)
    assert result.returncode == 1
    assert "No space left" in one_line(result.stderr.decode())


def test_status_on_a_missing_home_says_so_and_creates_nothing(tmp_path: Path) -> None:
    home = tmp_path / "nowhere"
    for args in (["status"], ["ls"], ["peers"]):
        result = run_cli(home, *args)
        assert result.returncode == 1 and "no node at" in one_line(result.stderr), args
    assert not home.exists()


def test_unusable_homes_and_listen_addresses_are_one_line(home: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a home")
    for bad_home in (a_file, Path("/proc/hearthfile-home")):
        for args in (["init"], ["run", "--listen", "127.0.0.1:0"]):
            result = run_cli(bad_home, *args, timeout=60)
            assert result.returncode == 1, (bad_home, args)
            assert str(bad_home) in one_line(result.stderr)
    assert run_cli(home, "init").returncode == 0
    (home / "config.yaml").write_text(f"node:\n  data_dir: {a_file}\n")
    result = run_cli(home, "run", "--listen", "127.0.0.1:0", timeout=60)
    assert result.returncode == 1 and str(a_file) in one_line(result.stderr)
    (home / "config.yaml").unlink()
    # --http off: another node on this machine may hold the default HTTP port, which
    # adds a line of its own (the gateway starts without HTTP and says so).
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(home, "run", "--listen", f"127.0.0.1:{port}", "--http", "off", timeout=60)
    assert result.returncode == 1 and "in use" in one_line(result.stderr)
    result = run_cli(home, "run", "--listen", "no-such-host.invalid:0", "--http", "off", timeout=60)
    assert result.returncode == 1 and "does not resolve" in one_line(result.stderr)
