"""Real daemons for integration tests: ``hearthfile run`` subprocesses on loopback."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import Result, run_cli

START_TIMEOUT_S = 30.0


def wait_for(condition, timeout_s: float = 30.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll ``condition`` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)  # polling a condition with a deadline


def bytes_in(directory: Path, *, skip_suffix: str = "") -> int:
    """Bytes of the files in ``directory`` (none when it is absent), as another process
    writes, renames and removes them meanwhile."""
    total = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if skip_suffix and entry.name.endswith(skip_suffix):
            continue
        try:
            total += entry.stat().st_size
        except FileNotFoundError:  # gone since the listing
            continue
    return total


def held_chunks(node: Daemon) -> int:
    """Chunks the node's store holds, complete blobs and partial ones alike (read
    from its index, as another reader would: WAL mode allows it while it runs)."""
    index = node.home / "data" / "index.sqlite3"
    if not index.exists():
        return 0
    db = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
    try:
        have = db.execute("SELECT COUNT(*) FROM have").fetchone()[0]
        whole = db.execute(
            "SELECT COALESCE(SUM(chunk_count), 0) FROM blobs WHERE complete = 1"
        ).fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0
    finally:
        db.close()
    return int(have) + int(whole)


class Daemon:
    """One node: its home, its ``run`` process and CLI calls against it."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = home / "daemon.log"
        home.mkdir(parents=True, exist_ok=True)
        assert self.cli("init").returncode == 0
        self.node_id = self.cli("id").out.strip()

    def cli(self, *args: str, timeout: float = 120) -> Result:
        return run_cli(self.home, *args, timeout=timeout)

    def background(self, *args: str, stdout: int | None = None) -> subprocess.Popen[bytes]:
        """``hearthfile ARGS`` against this node, running on while the test goes on."""
        command = [sys.executable, "-m", "hearthfile", "--home", str(self.home), *args]
        return subprocess.Popen(command, stdout=stdout, stderr=subprocess.PIPE)

    def ok(self, *args: str) -> str:
        result = self.cli(*args)
        assert result.returncode == 0, f"hearthfile {' '.join(args)}: {result.stderr}"
        return result.out

    def start(
        self, *peers: Daemon, config: str | None = None, port: int = 0, http: str | None = "off"
    ) -> Daemon:
        """``hearthfile run`` on loopback; ``http`` is off unless a test asks for it
        (``127.0.0.1:0``), so parallel daemons never compete for port 7780; None
        passes no ``--http`` at all (the default address)."""
        if config is not None:
            (self.home / "config.yaml").write_text(config)
        args = [
            sys.executable,
            "-m",
            "hearthfile",
            "--home",
            str(self.home),
            "run",
            "--listen",
            f"127.0.0.1:{port}",
            *(["--http", http] if http is not None else []),
        ]
        for peer in peers:
            args += ["--peer", f"127.0.0.1:{peer if isinstance(peer, int) else peer.port}"]
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, env=dict(os.environ))
        wait_for(self._started, START_TIMEOUT_S, f"daemon in {self.home} to listen")
        return self

    def _started(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited early:\n{self.log()}")
        info = self.home / "daemon.json"
        return info.exists() and json.loads(info.read_text())["pid"] == self.proc.pid

    @property
    def port(self) -> int:
        return int(json.loads((self.home / "daemon.json").read_text())["port"])

    @property
    def http_url(self) -> str:
        """``http://host:port`` of the gateway, from ``status --json``."""
        return "http://" + json.loads(self.ok("--json", "status"))["http"]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout_s)
        self.proc = None
        return code

    def peers(self) -> list[dict[str, object]]:
        return json.loads(self.ok("--json", "peers"))

    def connected_to(self, other: Daemon) -> bool:
        return any(p["node_id"] == other.node_id for p in self.peers())

    def trust(self, other: Daemon, level: str) -> None:
        self.ok("trust", other.node_id, "--level", level)


class Proxy:
    """tests/integration/proxy.py as a process: a throttled path to ``target_port``."""

    def __init__(self, workdir: Path, target_port: int, rate_bytes_per_s: float) -> None:
        port_file = workdir / f"proxy-{target_port}.port"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.proxy",
                str(target_port),
                str(rate_bytes_per_s),
                str(port_file),
            ],
            cwd=Path(__file__).resolve().parents[2],
        )
        self.port = int(
            wait_for(
                lambda: port_file.exists() and port_file.read_text(), 15, "the proxy to listen"
            )
        )

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
