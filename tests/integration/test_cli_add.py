"""``add`` as DESIGN.md section 8 has it: ``-`` and pipes read by the CLI (never by
the daemon's own stdin), directories file by file without following symlinks, and
a progress bar on a terminal."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Result, run_cli
from tests.integration.nodes import Daemon
from tests.unit.test_chunker import payload


def add(node: Daemon, *args: str, data: bytes | None = None) -> Result:
    return run_cli(node.home, "add", *args, input=data)


def test_stdin_is_the_clis_both_ways(make_node: Callable[[str], Daemon]) -> None:
    a = make_node("a")
    big = payload(3 * 1024 * 1024 + 17, 4)
    local = {}
    for args, data in ((["-"], b"hello\n"), (["/dev/stdin"], b"hello\n"), (["-"], big)):
        result = add(a, *args, data=data)
        assert result.returncode == 0, result.stderr
        local[(args[0], len(data))] = result.out.split()[-1]
    assert local[("-", 6)] == local[("/dev/stdin", 6)]
    a.start()
    for (path, size), cid in local.items():
        data = b"hello\n" if size == 6 else big
        through = add(a, path, data=data)
        assert through.returncode == 0, through.stderr
        assert through.out.split()[-1] == cid, "the daemon stored what the CLI read"
    assert a.cli("cat", local[("-", 6)]).stdout == b"hello\n"
    assert a.cli("cat", local[("-", len(big))]).stdout == big
    mixed = tmp_file(a.home.parent / "mixed.txt", b"on disk\n")
    both = add(a, str(mixed), "-", data=b"from a pipe\n")
    cids = both.out.split()
    assert len(cids) == 2 and a.cli("cat", cids[1]).stdout == b"from a pipe\n"


def tmp_file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_a_directory_adds_every_file_and_reports_the_rest(
    make_node: Callable[[str], Daemon], tmp_path: Path
) -> None:
    top = tmp_path / "tree"
    (top / "sub" / "deeper").mkdir(parents=True)
    files = [top / "b.txt", top / "sub" / "a.txt", top / "sub" / "deeper" / "c.txt", top / "z"]
    for i, path in enumerate(files):
        path.write_bytes(b"file %d\n" % i)
    (top / "link").symlink_to(top / "b.txt")
    (top / "sub" / "dirlink").symlink_to(top / "sub" / "deeper")
    os.mkfifo(top / "fifo")
    a = make_node("a")
    for running in (False, True):
        if running:
            a.start()
        result = add(a, str(top))
        assert result.returncode == 0, result.stderr
        cids = result.out.split()
        assert len(cids) == len(files), "one CID per regular file"
        for path, cid in zip(files, cids, strict=True):
            assert a.cli("cat", cid).stdout == path.read_bytes()
        skipped = result.stderr.strip().splitlines()
        assert len(skipped) == 3, skipped
        assert any("link" in line and "symlink" in line for line in skipped)
        assert any("dirlink" in line and "symlink" in line for line in skipped)
        assert any("fifo" in line and "not a regular file" in line for line in skipped)
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = add(a, str(empty))
    assert nothing.returncode == 1 and "nothing to add" in nothing.stderr


def _on_a_terminal(command: list[str]) -> tuple[int, bytes, bytes]:
    """Run with stderr on a pseudo-terminal: (exit code, stdout, what the terminal got)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen = b""
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not data:
            break
        seen += data
    os.close(master)
    assert proc.stdout is not None
    out = proc.stdout.read()
    return proc.wait(60), out, seen


def test_add_of_a_large_file_shows_progress_on_a_terminal(
    make_node: Callable[[str], Daemon], tmp_path: Path
) -> None:
    src = tmp_path / "large.bin"
    with open(src, "wb") as f:
        for i in range(48):
            f.write(payload(1024 * 1024, i))
    a = make_node("a").start()
    command = [sys.executable, "-m", "hearthfile", "--home", str(a.home), "add", str(src)]
    code, out, terminal = _on_a_terminal(command)
    assert code == 0, terminal
    assert out.decode().split()[-1].startswith("blake3:")
    assert b"add" in terminal and (b"MB" in terminal or b"MiB" in terminal), terminal[-400:]
    assert b"/s" in terminal, "the rate is shown"
    quiet = a.cli("add", "--json", str(src))
    assert quiet.returncode == 0 and quiet.stderr == "", "no bar where stderr is no terminal"
    assert json.loads(quiet.out)["cids"] == [out.decode().split()[-1]]


def test_a_file_the_daemon_cannot_see_is_streamed_by_the_cli(
    make_node: Callable[[str], Daemon], tmp_path: Path
) -> None:
    """The CLI in its own mount namespace: the file exists only as the CLI sees it."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare and root for a private mount namespace")
    a = make_node("a").start()
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    script = (
        f"mount -t tmpfs none {hidden} && printf 'only here' > {hidden}/f && "
        f"exec {sys.executable} -m hearthfile --home {a.home} add {hidden}/f"
    )
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", script], capture_output=True, timeout=120, check=False
    )
    if result.returncode != 0 and b"mount" in result.stderr:
        pytest.skip(f"no private mounts here: {result.stderr.decode()}")
    assert result.returncode == 0, result.stderr.decode()
    assert not (hidden / "f").exists(), "the daemon's view has no such file"
    assert a.cli("cat", result.stdout.decode().split()[-1]).stdout == b"only here"
