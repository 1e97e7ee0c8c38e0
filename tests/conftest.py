"""Shared fixtures: temporary homes, a store, and a way to run the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hearthfile.blobs.store import BlobStore


class FakeClock:
    """A settable clock for LRU order; tests move it explicitly."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = 1.0) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[BlobStore]:
    s = BlobStore(tmp_path / "data", clock=clock)
    yield s
    s.close()


@dataclass
class Result:
    returncode: int
    stdout: bytes
    stderr: str

    @property
    def out(self) -> str:
        return self.stdout.decode()


def run_cli(home: Path, *args: str, input: bytes | None = None, timeout: float = 120) -> Result:
    """Run ``hearthfile --home HOME ARGS`` as a real subprocess."""
    env = dict(os.environ, HEARTHFILE_HOME=str(home))
    proc = subprocess.run(
        [sys.executable, "-m", "hearthfile", "--home", str(home), *args],
        input=input,
        capture_output=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr.decode())


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h
