"""A node's home directory: its key, its daemon lock and where the daemon listens.

Light on purpose (no trio, no bus): every CLI command reads it first, to learn
whether a daemon runs for the home and how to reach it.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from hearthfile.address import Address
from hearthfile.errors import HearthError
from hearthfile.identity import NodeId, NodeKey

KEY_FILE: Final = "node.key"
LOCK_FILE: Final = "daemon.lock"
INFO_FILE: Final = "daemon.json"
#: The bearer token HTTP writes need (DESIGN.md section 10); readable by the owner only.
HTTP_TOKEN_FILE: Final = "http.token"
#: The daemon's local control socket: the CLI's own way in, which no remote
#: stranger can fill (mode 0600, in the home).
CONTROL_SOCKET: Final = "node.sock"
#: A Unix socket path is at most 107 bytes (sun_path less its NUL).
MAX_SOCKET_PATH_BYTES: Final = 107


class DaemonRunning(HearthError):
    """Another daemon holds this home."""


@dataclass(frozen=True, slots=True)
class DaemonInfo:
    pid: int
    address: Address
    node_id: str
    data_dir: Path


def load_or_create_key(home: Path) -> NodeKey:
    path = home / KEY_FILE
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        NodeKey.generate().save(path)
    return NodeKey.load(path)


def load_or_create_http_token(home: Path) -> bytes:
    """The gateway's write token: 32 random bytes as hex, made once (mode 0600)."""
    path = home / HTTP_TOKEN_FILE
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(32)
        fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(path.with_suffix(".tmp"), path)
    return path.read_text().strip().encode()


def daemon_info(home: Path) -> DaemonInfo | None:
    """Where the home's daemon listens, or None when no daemon holds the home."""
    try:
        fd = os.open(home / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None  # nobody holds it: no daemon
    except BlockingIOError:
        pass
    finally:
        os.close(fd)
    try:
        raw = json.loads((home / INFO_FILE).read_text())
        return DaemonInfo(
            raw["pid"], Address(raw["host"], raw["port"]), raw["node_id"], Path(raw["data_dir"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # starting up: the lock is held but nothing is written yet


def control_socket(home: Path) -> Path | None:
    """The home's control socket path, or None where the home's path is too long for
    one (then the CLI dials the TCP listener like any peer)."""
    path = home.absolute() / CONTROL_SOCKET
    return path if len(os.fsencode(path)) <= MAX_SOCKET_PATH_BYTES else None


@contextmanager
def home_lock(home: Path) -> Iterator[int]:
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 100, 0).decode(errors="replace").strip()
        os.close(fd)
        raise DaemonRunning(
            f"a daemon already runs for {home} ({holder or 'pid unknown'})"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
    try:
        yield fd
    finally:
        (home / INFO_FILE).unlink(missing_ok=True)
        os.close(fd)


def write_info(home: Path, address: Address, me: NodeId, data_dir: Path) -> None:
    """Where the CLI finds the daemon, and the store it may read directly."""
    info = {
        "pid": os.getpid(),
        "host": address.host,
        "port": address.port,
        "node_id": str(me),
        "data_dir": str(data_dir.absolute()),
    }
    tmp = home / (INFO_FILE + ".tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, home / INFO_FILE)
