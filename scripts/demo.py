"""hearthfile demo: three nodes on loopback, in throwaway homes.

1. Starts three daemons (alice, bob, carol) with their own homes; bob and
   carol bootstrap to alice. Alice and bob trust each other; carol only lists
   bob as a member.
2. Adds a generated 64 MiB file on alice and fetches it on bob by CID.
3. Bob pushes a blob to alice, who trusts him, and then to carol, who refuses.
4. Checks every byte, prints what happened, stops the daemons.

Everything goes through the real ``hearthfile`` command line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEP = "  "


class Node:
    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.home = root / name
        self.proc: subprocess.Popen[bytes] | None = None
        self.hf("init")
        self.node_id = self.hf("id").strip()

    def hf(self, *args: str, check: bool = True) -> str:
        cmd = [sys.executable, "-m", "hearthfile", "--home", str(self.home), *args]
        proc = subprocess.run(cmd, capture_output=True, check=False)
        if check and proc.returncode != 0:
            sys.exit(
                f"demo: {self.name}: `hearthfile {' '.join(args)}` failed: "
                f"{proc.stderr.decode().strip()}"
            )
        return proc.stdout.decode() if check else proc.stderr.decode().strip()

    def start(self, *peers: Node) -> None:
        args = [
            sys.executable,
            "-m",
            "hearthfile",
            "--home",
            str(self.home),
            "run",
            "--listen",
            "127.0.0.1:0",
        ]
        for peer in peers:
            args += ["--peer", f"127.0.0.1:{peer.port}"]
        log = open(self.home / "daemon.log", "wb")  # noqa: SIM115 - the daemon owns it
        self.proc = subprocess.Popen(args, stdout=log, stderr=log)
        self._wait(lambda: (self.home / "daemon.json").exists(), "to listen")

    @property
    def port(self) -> int:
        return int(json.loads((self.home / "daemon.json").read_text())["port"])

    def connected(self, other: Node) -> bool:
        peers = json.loads(self.hf("--json", "peers"))
        return any(p["node_id"] == other.node_id for p in peers)

    def _wait(self, condition: object, what: str) -> None:
        deadline = time.monotonic() + 30
        while not condition():  # type: ignore[operator]
            if self.proc is not None and self.proc.poll() is not None:
                sys.exit(f"demo: {self.name} exited: {(self.home / 'daemon.log').read_text()}")
            if time.monotonic() > deadline:
                sys.exit(f"demo: {self.name} did not get {what} in time")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def write_random(path: Path, mib: int) -> None:
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1024 * 1024))


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="hearthfile-demo-") as tmp:
        root = Path(tmp)
        alice, bob, carol = Node(root, "alice"), Node(root, "bob"), Node(root, "carol")
        nodes = [alice, bob, carol]
        try:
            return run(root, alice, bob, carol)
        finally:
            for node in nodes:
                node.stop()


def run(root: Path, alice: Node, bob: Node, carol: Node) -> int:
    alice.hf("trust", bob.node_id, "--level", "trusted")
    bob.hf("trust", alice.node_id, "--level", "trusted")
    carol.hf("trust", bob.node_id, "--level", "member")
    alice.start()
    bob.start(alice)
    carol.start(alice, bob)
    for a, b in [(alice, bob), (carol, bob)]:
        a._wait(lambda a=a, b=b: a.connected(b), f"connected to {b.name}")
    print("three nodes on loopback:")
    for n in (alice, bob, carol):
        print(f"{STEP}{n.name:6} {n.node_id} port {n.port}")

    src = root / "holiday.mp4"
    write_random(src, 64)
    started = time.monotonic()
    cid = alice.hf("add", str(src)).split()[-1]
    print(f"alice added a 64 MiB file in {time.monotonic() - started:.2f}s: {cid}")

    out = root / "bob-copy.mp4"
    started = time.monotonic()
    bob.hf("get", cid, "-o", str(out))
    took = time.monotonic() - started
    same = out.read_bytes() == src.read_bytes()
    print(
        f"bob fetched it from alice in {took:.2f}s ({64 / took:.0f} MiB/s, encrypted, every "
        f"chunk verified): {'identical' if same else 'DIFFERENT'}"
    )

    note = root / "notes.txt"
    note.write_bytes(b"bob's notes\n" * 50_000)
    note_cid = bob.hf("add", str(note)).split()[-1]
    pushed = bob.hf("push", note_cid, "--to", alice.node_id).strip()
    print(f"bob -> alice (alice trusts bob): {pushed}")
    refused = bob.hf("push", note_cid, "--to", carol.node_id, check=False)
    print(f"bob -> carol (carol lists bob only as a member): refused: {refused}")
    on_alice = alice.hf("cat", note_cid).encode() == note.read_bytes()
    on_carol = carol.hf("stat", note_cid, check=False)
    print(
        f"alice holds the notes: {'yes, identical' if on_alice else 'NO'}; "
        f"carol: {on_carol or 'has it (unexpected)'}"
    )
    ok = same and on_alice and "unauthorized" in refused and "not found" in on_carol
    print("demo ok" if ok else "demo FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
