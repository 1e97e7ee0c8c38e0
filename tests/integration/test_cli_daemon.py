"""The command line against running daemons (DESIGN.md section 8): stop, the event
stream and the log without the node's own CLI calls, whohas and get with holders
offline, and Ctrl-C during add/get/cat."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.nodes import Daemon, Proxy, wait_for
from tests.integration.test_transfer import config_for, write_blob
from tests.unit.test_chunker import payload


@pytest.fixture
def proxies() -> Iterator[list[Proxy]]:
    started: list[Proxy] = []
    yield started
    for proxy in started:
        proxy.stop()


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def holders(node: Daemon, cid: str) -> list[dict[str, object]]:
    return list(json.loads(node.ok("--json", "whohas", cid)))


def test_own_calls_are_not_peers_whohas_offline_and_stop(
    make_node: Callable[[str], Daemon], tmp_path: Path
) -> None:
    a, b = make_node("a"), make_node("b")
    config = config_for([a, b])
    a.start(config=config)
    b.start(a, config=config)
    wait_for(lambda: b.connected_to(a) and a.connected_to(b), what="the nodes to connect")
    src = tmp_path / "held.bin"
    src.write_bytes(payload(300_000, 1))
    cid = a.ok("add", str(src)).split()[-1]
    assert holders(a, cid) == [], "whohas does not list the node itself"
    wait_for(lambda: holders(b, cid), 60, "b to learn that a holds it")
    [holder] = holders(b, cid)
    assert holder["node_id"] == a.node_id and holder["online"] is True

    events = [json.loads(line) for line in a.ok("--json", "events").splitlines()]
    peer_events = [e for e in events if e["event"] in ("peer.up", "peer.down")]
    assert peer_events and all(e["node_id"] == b.node_id for e in peer_events), peer_events
    assert all(e["at"].endswith("Z") for e in events), "ISO 8601 times"
    ups = [line for line in a.log().splitlines() if " up " in line or "connected" in line]
    assert len(ups) == 1 and b.node_id[:12] in ups[0], f"one line per peer up: {ups}"

    follow = a.background("events", "--follow", stdout=subprocess.PIPE)
    assert follow.stdout is not None
    assert follow.stdout.readline(), "the first event"
    follow.stdout.close()  # as `hearthfile events --follow | head -1` does
    more = tmp_path / "more.bin"
    more.write_bytes(b"another event")
    a.ok("add", str(more))  # an advert: the next write meets the closed pipe
    _, err = follow.communicate(timeout=60)
    assert follow.returncode == 0 and err == b"", err.decode()

    stopped = a.cli("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert a.proc is not None and a.proc.wait(30) == 0, "stop ended the daemon"
    a.proc = None
    assert not (a.home / "daemon.json").exists()
    wait_for(lambda: not holders(b, cid)[0]["online"], 60, "b to see a offline")
    assert "offline" in b.ok("whohas", cid)
    got = b.cli("get", cid, "-o", str(tmp_path / "out.bin"))
    assert got.returncode == 1 and "offline" in one_line(got.stderr)
    assert not (tmp_path / "out.bin").exists()
    again = a.cli("stop")
    assert again.returncode == 1 and "no daemon" in one_line(again.stderr)


def _connected(pid: int) -> bool:
    """The process has a socket open: the CLI reached its daemon."""
    fds = Path(f"/proc/{pid}/fd")
    try:
        return any(os.readlink(fd).startswith("socket:") for fd in fds.iterdir())
    except OSError:
        return False


def _interrupt(command: list[str], started: Callable[[], object]) -> tuple[int, str]:
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for(
        lambda: (_connected(proc.pid) and started()) or proc.poll() is not None,
        60,
        "the command to get going",
    )
    assert proc.poll() is None, "the command ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()  # no stray process past the test
        proc.communicate()
        raise AssertionError(f"{command[-2:]} did not end within 30 s of Ctrl-C") from None
    return proc.returncode, err.decode()


def test_ctrl_c_on_add_get_cat_through_a_daemon(
    make_node: Callable[[str], Daemon], tmp_path: Path, proxies: list[Proxy]
) -> None:
    a, b = make_node("a"), make_node("b")
    config = config_for([a, b])
    a.start(config=config)
    cid = a.ok("add", str(write_blob(tmp_path / "big.bin", 24, 7))).split()[-1]
    slow = Proxy(tmp_path, a.port, 1024 * 1024)
    proxies.append(slow)
    b.start(slow.port, config=config)
    wait_for(lambda: holders(b, cid), 60, "b to learn that a holds it")

    def fetching() -> bool:
        return bool(json.loads(b.ok("--json", "transfers")))

    cli = [sys.executable, "-m", "hearthfile", "--home", str(b.home)]
    for args in (["get", cid, "-o", str(tmp_path / "out.bin")], ["cat", cid]):
        code, err = _interrupt([*cli, *args], fetching)
        assert code == 130 and one_line(err) == "hearthfile: interrupted", (args, err)

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code, err = _interrupt([*cli, "add", str(fifo)], lambda: True)
    assert code == 130 and one_line(err) == "hearthfile: interrupted", err


def test_cat_and_get_of_a_held_blob_need_no_call_to_the_daemon(
    make_node: Callable[[str], Daemon], tmp_path: Path
) -> None:
    """The daemon is frozen (SIGSTOP): a blob it holds is still read from its store,
    since nothing needs the daemon to do anything; a listing reads the index too."""
    node = make_node("a").start()
    src = tmp_path / "held.bin"
    src.write_bytes(payload(300_000, 41))
    cid = node.ok("add", str(src)).split()[-1]
    assert node.proc is not None
    node.proc.send_signal(signal.SIGSTOP)
    try:
        assert node.cli("cat", cid, timeout=30).stdout == src.read_bytes()
        out = tmp_path / "out.bin"
        assert node.cli("get", cid, "-o", str(out), timeout=30).returncode == 0
        assert out.read_bytes() == src.read_bytes()
        assert [e["cid"] for e in json.loads(node.cli("--json", "ls", timeout=30).out)] == [cid]
        assert node.proc.poll() is None, "the daemon was running (frozen) all along"
    finally:
        node.proc.send_signal(signal.SIGCONT)


def test_get_of_many_connects_to_the_daemon_from_its_tasks(
    make_node: Callable[[str], Daemon], tmp_path: Path
) -> None:
    """The first call to the daemon comes from one of get's tasks (the held blob needs
    none): the connection is made once and closed cleanly, each CID gets its answer."""
    node = make_node("a").start()
    src = tmp_path / "held.bin"
    src.write_bytes(payload(10_000, 42))
    cid = node.ok("add", str(src)).split()[-1]
    unknown = [f"blake3:{i:064x}" for i in range(1, 4)]
    got = node.cli("get", cid, *unknown, "-o", str(tmp_path / "out"), timeout=60)
    assert got.returncode == 1 and "Traceback" not in got.stderr, got.stderr
    assert sorted(got.stderr.strip().splitlines()) == sorted(
        f"hearthfile: {c}: not found: {c}: no known source" for c in unknown
    )
    assert (tmp_path / "out" / "held.bin").read_bytes() == src.read_bytes()
