"""hearthfile demo: add a generated file to a throwaway store, read it back, check it.

Everything runs through the real ``hearthfile`` command line in a temporary
home that is removed afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def hf(home: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    cmd = [sys.executable, "-m", "hearthfile", "--home", str(home), *args]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"demo: `hearthfile {' '.join(args)}` failed: {proc.stderr.decode().strip()}")
    return proc


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="hearthfile-demo-") as tmp:
        home, src = Path(tmp) / "home", Path(tmp) / "sample.bin"
        size = 64 * 1024 * 1024
        with open(src, "wb") as f:
            for _ in range(size // (1024 * 1024)):
                f.write(os.urandom(1024 * 1024))
        print(f"generated {src.name}: {size // (1024 * 1024)} MiB of random bytes")
        hf(home, "init")
        started = time.monotonic()
        cid = hf(home, "add", str(src)).stdout.decode().split()[-1]
        took = time.monotonic() - started
        print(f"added in {took:.2f}s (durable on return): {cid}")
        out = Path(tmp) / "readback.bin"
        hf(home, "get", cid, "-o", str(out))
        same = src.read_bytes() == out.read_bytes()
        print(f"read back {out.stat().st_size} bytes: {'identical' if same else 'DIFFERENT'}")
        print(hf(home, "verify").stdout.decode().strip())
        if not same:
            return 1
    print("demo ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
