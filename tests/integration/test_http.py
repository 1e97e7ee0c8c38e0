"""The HTTP gateway of a real daemon, driven by real clients (curl, aria2c, sockets).

DESIGN.md section 10. One daemon serves the module's single-node tests; the
fetch-on-miss tests start a pair. curl is installed by scripts/test when missing.
"""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import subprocess
import tempfile
import threading
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import trio

from hearthfile.blobs.chunker import chunk_blob
from hearthfile.config import DEFAULT_HTTP_PORT
from tests.integration.nodes import Daemon, Proxy, wait_for
from tests.integration.test_transfer import MIB, config_for, knows, write_blob
from tests.unit.test_chunker import payload

CS = 256 * 1024
CACHE = "public, max-age=29030400, immutable"
TEXT = b"hello world, this is a test blob of 57 bytes.........!!!\n"

pytestmark = pytest.mark.skipif(
    shutil.which("curl") is None, reason="curl is not installed (scripts/test installs it as root)"
)


@dataclass
class Gateway:
    node: Daemon
    url: str
    token: str

    def auth(self) -> list[str]:
        return ["-H", f"Authorization: Bearer {self.token}"]

    def add(self, data: bytes, name: str, tmp: Path) -> str:
        path = tmp / name
        path.write_bytes(data)
        return self.node.ok("add", str(path)).split()[-1]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def curl(*args: str, cwd: Path | None = None) -> Reply:
    """One curl request: the status and headers of the last response, and the body
    (nothing with -O, which writes the body to a file)."""
    with tempfile.NamedTemporaryFile() as dump:
        proc = subprocess.run(
            ["curl", "-sS", "--max-time", "60", "-D", dump.name, *args],
            capture_output=True,
            timeout=90,
            check=False,
            cwd=cwd,
        )
        assert proc.returncode == 0, proc.stderr.decode()
        heads = Path(dump.name).read_bytes().decode("utf-8").strip().split("\r\n\r\n")
    lines = heads[-1].split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Reply(int(lines[0].split()[1]), headers, proc.stdout)


def error_of(reply: Reply) -> str:
    assert reply.headers["content-type"] == "application/json"
    assert reply.body.count(b"\n") == 1  # one line, never a traceback
    value = json.loads(reply.body)
    assert set(value) == {"error", "detail"}
    return str(value["error"])


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    node = Daemon(tmp_path_factory.mktemp("gw") / "a")
    node.start(http="127.0.0.1:0")
    token = (node.home / "http.token").read_text().strip()
    assert (node.home / "http.token").stat().st_mode & 0o777 == 0o600
    yield Gateway(node, node.http_url, token)
    node.stop()


@pytest.fixture
def text_cid(gw: Gateway, tmp_path: Path) -> str:
    return gw.add(TEXT, "hello.txt", tmp_path)


def test_head_and_get_headers(gw: Gateway, text_cid: str) -> None:
    expected = {
        "content-type": "text/plain",
        "x-content-type-options": "nosniff",
        "content-disposition": 'inline; filename="hello.txt"',
        "etag": f'"{text_cid}"',
        "cache-control": CACHE,
        "accept-ranges": "bytes",
        "content-length": "57",
    }
    head = curl("-I", f"{gw.url}/blob/{text_cid}")
    got = curl(f"{gw.url}/blob/{text_cid}")
    for reply in (head, got):
        assert reply.status == 200
        assert {k: reply.headers.get(k) for k in expected} == expected
    assert got.body == TEXT
    attach = curl("-I", f"{gw.url}/blob/{text_cid}/other.txt?download=1")
    assert attach.headers["content-disposition"] == 'attachment; filename="other.txt"'


def test_ranges(gw: Gateway, text_cid: str) -> None:
    one = curl("-r", "6-16", f"{gw.url}/blob/{text_cid}")
    assert one.status == 206
    assert one.headers["content-range"] == "bytes 6-16/57"
    assert one.body == TEXT[6:17]
    suffix = curl("-r", "-5", f"{gw.url}/blob/{text_cid}")
    assert (suffix.status, suffix.body) == (206, TEXT[-5:])

    multi = curl("-r", "0-1,5-7,50-", f"{gw.url}/blob/{text_cid}")
    assert multi.status == 206
    kind, _, boundary = multi.headers["content-type"].partition("; boundary=")
    assert kind == "multipart/byteranges"
    assert int(multi.headers["content-length"]) == len(multi.body)
    parts = multi.body.split(f"--{boundary}".encode())
    assert parts[-1] == b"--\r\n"
    bodies = []
    for part in parts[1:-1]:
        head, _, data = part.partition(b"\r\n\r\n")
        assert b"Content-Type: text/plain" in head
        bodies.append((head.split(b"Content-Range: ")[1].decode(), data.removesuffix(b"\r\n")))
    assert bodies == [
        ("bytes 0-1/57", TEXT[0:2]),
        ("bytes 5-7/57", TEXT[5:8]),
        ("bytes 50-56/57", TEXT[50:]),
    ]

    bad = curl("-r", "100-200", f"{gw.url}/blob/{text_cid}")
    assert bad.status == 416
    assert bad.headers["content-range"] == "bytes */57"
    assert error_of(bad) == "range_not_satisfiable"
    stale = curl("-r", "6-16", "-H", 'If-Range: "blake3:other"', f"{gw.url}/blob/{text_cid}")
    assert (stale.status, stale.body) == (200, TEXT)
    fresh = curl("-r", "6-16", "-H", f'If-Range: "{text_cid}"', f"{gw.url}/blob/{text_cid}")
    assert (fresh.status, fresh.body) == (206, TEXT[6:17])


@pytest.mark.parametrize("tag", ["exact", "weak-list", "star"])
def test_if_none_match(gw: Gateway, text_cid: str, tag: str) -> None:
    header = {
        "exact": f'"{text_cid}"',
        "weak-list": f'"blake3:nope", W/"{text_cid}"',
        "star": "*",
    }[tag]
    reply = curl("-H", f"If-None-Match: {header}", f"{gw.url}/blob/{text_cid}")
    assert reply.status == 304
    assert reply.body == b""
    assert reply.headers["etag"] == f'"{text_cid}"'
    other = curl("-H", 'If-None-Match: "blake3:nope"', f"{gw.url}/blob/{text_cid}")
    assert other.status == 200


@pytest.mark.parametrize("name", ["report.pdf", "héllo wörld.txt"])
def test_curl_saves_under_the_stored_name(gw: Gateway, tmp_path: Path, name: str) -> None:
    data = payload(3000, 5)
    quoted = urllib.parse.quote(name)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    up = curl("-X", "PUT", *gw.auth(), "--data-binary", f"@{src}", f"{gw.url}/blob?name={quoted}")
    assert up.status == 201
    added = json.loads(up.body)
    assert added["name"] == name
    out = tmp_path / "out"
    out.mkdir()
    got = curl("-O", "-J", f"{gw.url}/blob/{added['cid']}?download=1", cwd=out)
    assert got.status == 200
    assert [p.name for p in out.iterdir()] == [name]
    assert (out / name).read_bytes() == data


def test_raw_and_multipart_uploads(gw: Gateway, tmp_path: Path) -> None:
    files = {"a.png": payload(CS * 2 + 17, 1), "b.txt": b"short", "empty.bin": b""}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    raw = curl(
        "-X", "PUT", *gw.auth(), "-H", "Content-Type: image/png",
        "--data-binary", f"@{tmp_path / 'a.png'}", f"{gw.url}/blob?name=a.png",
    )  # fmt: skip
    assert raw.status == 201
    first = json.loads(raw.body)
    assert (first["size"], first["name"], first["mime"]) == (CS * 2 + 17, "a.png", "image/png")
    assert first["content"].startswith("blake3:")

    form = [arg for name in files for arg in ("-F", f"{name}=@{tmp_path / name}")]
    multi = curl(*gw.auth(), *form, "-F", "comment=ignored", f"{gw.url}/blob")
    assert multi.status == 201
    added = json.loads(multi.body)
    assert [a["name"] for a in added] == list(files)
    assert added[0]["cid"] == first["cid"]
    for item, data in zip(added, files.values(), strict=True):
        assert item["size"] == len(data)
        assert curl(f"{gw.url}/blob/{item['cid']}").body == data
    assert curl(f"{gw.url}/blob/{added[1]['cid']}").headers["content-type"] == "text/plain"


def test_two_phase_upload_sends_only_missing_chunks(gw: Gateway, tmp_path: Path) -> None:
    data = payload(10 * CS - 99, 42)
    manifest, chunks = chunk_blob(data, name="big.bin")
    gw.add(data[: 4 * CS], "head.bin", tmp_path)  # the first four chunks are held already
    body = json.dumps(
        {
            "v": 1,
            "size": manifest.size,
            "chunk_size": manifest.chunk_size,
            "chunks": list(manifest.chunks),
            "content": manifest.content,
            "name": "big.bin",
        }
    )
    plan = curl(*gw.auth(), "-H", "Content-Type: application/json", "-d", body,
                f"{gw.url}/blob/plan")  # fmt: skip
    assert plan.status == 200
    answer = json.loads(plan.body)
    assert answer == {"upload_required": True, "missing": [[4, 10]]}

    early = curl(*gw.auth(), "-d", body, f"{gw.url}/blob/commit")
    assert (early.status, error_of(early)) == (409, "chunks_missing")
    wrong = tmp_path / "wrong"
    wrong.write_bytes(chunks[5])
    bad = curl("-X", "PUT", *gw.auth(), "--data-binary", f"@{wrong}",
               f"{gw.url}/chunk/{manifest.chunks[4]}")  # fmt: skip
    assert bad.status == 400

    sent = 0
    for start, end in answer["missing"]:
        for index in range(start, end):
            piece = tmp_path / f"c{index}"
            piece.write_bytes(chunks[index])
            up = curl("-X", "PUT", *gw.auth(), "--data-binary", f"@{piece}",
                      f"{gw.url}/chunk/{manifest.chunks[index]}")  # fmt: skip
            assert up.status == 201
            sent += 1
    assert sent == 6
    done = curl(*gw.auth(), "-d", body, f"{gw.url}/blob/commit")
    assert done.status == 201
    assert json.loads(done.body)["cid"] == manifest.cid
    lie = dict(json.loads(body), content="blake3:" + "2" * 64)  # chunks held, content false
    false = curl(*gw.auth(), "-d", json.dumps(lie), f"{gw.url}/blob/commit")
    assert (false.status, error_of(false)) == (400, "manifest_invalid")
    again = curl(*gw.auth(), "-d", body, f"{gw.url}/blob/plan")
    assert json.loads(again.body) == {"upload_required": False, "missing": []}
    assert curl(f"{gw.url}/blob/{manifest.cid}").body == data
    canonical = curl(f"{gw.url}/manifest/{manifest.cid}")
    assert canonical.body == manifest.encode()
    assert curl(f"{gw.url}/chunk/{manifest.chunks[7]}").body == chunks[7]


def test_writes_need_the_token(gw: Gateway, text_cid: str) -> None:
    for auth in ([], ["-H", "Authorization: Bearer wrong"], ["-H", "Authorization: Basic x"]):
        put = curl("-X", "PUT", *auth, "--data-binary", "x", f"{gw.url}/blob?name=x")
        assert (put.status, error_of(put)) == (401, "unauthorized")
        delete = curl("-X", "DELETE", *auth, f"{gw.url}/blob/{text_cid}")
        assert delete.status == 401
    assert curl("-I", f"{gw.url}/blob/{text_cid}").status == 200


def test_list_pin_delete(gw: Gateway, tmp_path: Path) -> None:
    cid = gw.add(b"list me", "l.txt", tmp_path)
    listed = json.loads(curl(f"{gw.url}/blobs?prefix={cid[:12]}&limit=1000").body)
    assert cid in [i["cid"] for i in listed["items"]]
    page = json.loads(curl(f"{gw.url}/blobs?limit=1").body)
    assert len(page["items"]) == 1 and page["next"] == page["items"][0]["cid"]
    rest = json.loads(curl(f"{gw.url}/blobs?after={page['next']}&limit=1000").body)
    assert page["next"] not in [i["cid"] for i in rest["items"]]

    assert curl("-X", "PUT", *gw.auth(), f"{gw.url}/blob/{cid}/pin").status == 200
    assert json.loads(gw.node.ok("--json", "stat", cid))["pinned"] is True
    pinned = curl("-X", "DELETE", *gw.auth(), f"{gw.url}/blob/{cid}")
    assert (pinned.status, error_of(pinned)) == (409, "pinned")
    assert curl("-X", "DELETE", *gw.auth(), f"{gw.url}/blob/{cid}/pin").status == 200
    assert curl("-X", "DELETE", *gw.auth(), f"{gw.url}/blob/{cid}").status == 200
    gone = curl("-H", "Cache-Control: only-if-cached", f"{gw.url}/blob/{cid}")
    assert (gone.status, error_of(gone)) == (412, "not_cached")
    assert curl(f"{gw.url}/blob/{cid}").status == 404  # no peer holds it
    assert curl("-X", "PUT", *gw.auth(), f"{gw.url}/blob/{cid}/pin").status == 404


def test_bad_requests_get_one_line_json(gw: Gateway) -> None:
    assert error_of(curl(f"{gw.url}/blob/not-a-cid")) == "bad_request"
    assert error_of(curl(f"{gw.url}/nowhere")) == "not_found"
    assert error_of(curl("-X", "PATCH", f"{gw.url}/status")) == "method_not_allowed"
    assert error_of(curl(f"{gw.url}/blobs?limit=0")) == "bad_request"
    form = curl(*gw.auth(), "-H", "Content-Type: text/plain", "-d", "x", f"{gw.url}/blob")
    assert form.status == 415
    junk = curl(*gw.auth(), "-d", "{not json", f"{gw.url}/blob/plan")
    assert (junk.status, error_of(junk)) == (400, "manifest_invalid")


def test_status_metrics_events(gw: Gateway, tmp_path: Path) -> None:
    status = json.loads(curl(f"{gw.url}/status").body)
    assert status["node_id"] == gw.node.node_id
    assert gw.url.endswith(status["http"])
    metrics = curl(f"{gw.url}/metrics")
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    names = [line.split()[0] for line in metrics.body.decode().splitlines() if line[0] != "#"]
    assert all(n.startswith("hearthfile_") for n in names)
    assert "hearthfile_http_requests_total" in names
    assert "hearthfile_gc_evictions_total" in names
    assert "hearthfile_fetched_bytes_total" in names
    assert all("{" not in n for n in names)  # no labels, so no CID or peer labels
    events = json.loads(curl(f"{gw.url}/events?since=0").body)
    last = events[-1]["id"] if events else 0
    assert [e["id"] for e in events] == list(range(events[0]["id"], last + 1)) if events else True
    gw.add(b"an event", "e.txt", tmp_path)
    newer = json.loads(curl(f"{gw.url}/events?since={last}&timeout=20").body)
    assert newer and newer[0]["id"] == last + 1
    assert set(newer[0]) == {"id", "time", "type", "data"}


def test_http_address_taken(make_node: Callable[[str], Daemon]) -> None:
    """An explicit --http that cannot bind is an error; the default one taken is not."""
    holder = socket.socket()
    with holder:
        try:
            holder.bind(("127.0.0.1", DEFAULT_HTTP_PORT))
            holder.listen()
        except OSError:
            pass  # taken already, which is the case under test
        a = make_node("a")
        failed = a.cli("run", "--listen", "127.0.0.1:0", "--http", f"127.0.0.1:{DEFAULT_HTTP_PORT}")
        assert failed.returncode == 1
        assert failed.stderr.strip().count("\n") == 0
        assert f"cannot listen for HTTP on 127.0.0.1:{DEFAULT_HTTP_PORT}" in failed.stderr
        a.start(http=None)
        assert json.loads(a.ok("--json", "status"))["http"] is None
        assert a.log().count("http_off reason=port_taken") == 1
    a.stop()
    a.start(http="off")
    assert json.loads(a.ok("--json", "status"))["http"] is None


def _pair(
    make_node: Callable[[str], Daemon], tmp_path: Path, mib: int, rate: float | None = None
) -> tuple[Daemon, Daemon, str, bytes, list[Proxy]]:
    """A holder of a ``mib`` MiB blob and a gateway node that knows it as a holder
    (through a proxy throttled to ``rate`` bytes/s when given)."""
    holder, node = make_node("holder"), make_node("node")
    config = config_for([holder, node])
    src = write_blob(tmp_path / "src.bin", mib, 9)
    holder.start(config=config)
    cid = holder.ok("add", str(src)).split()[-1]
    proxies = [Proxy(tmp_path, holder.port, rate)] if rate else []
    node.start(proxies[0].port if proxies else holder, config=config, http="127.0.0.1:0")
    wait_for(lambda: knows(node, cid, [holder]), 60, "the gateway node to learn the holder")
    return holder, node, cid, src.read_bytes(), proxies


def test_fetch_on_miss_streams_before_the_fetch_ends(
    make_node: Callable[[str], Daemon], tmp_path: Path
) -> None:
    _, node, cid, data, proxies = _pair(make_node, tmp_path, 16, rate=2 * MIB)
    try:
        url = node.http_url
        get = subprocess.Popen(["curl", "-sS", "--max-time", "120", f"{url}/blob/{cid}"],
                               stdout=subprocess.PIPE)  # fmt: skip
        assert get.stdout is not None
        first = get.stdout.read(CS)
        running = json.loads(node.ok("--json", "transfers"))
        assert first == data[:CS]
        assert cid in [r["cid"] for r in running], "bytes went out while the fetch still ran"
        rest = get.stdout.read()
        assert get.wait(60) == 0
        assert first + rest == data
        assert json.loads(node.ok("--json", "stat", cid))["complete"] is True
    finally:
        for proxy in proxies:
            proxy.stop()


def test_fetch_on_miss_ranges_and_failures(
    make_node: Callable[[str], Daemon], tmp_path: Path
) -> None:
    holder, node, cid, data, _ = _pair(make_node, tmp_path, 4)
    url = node.http_url
    cached = curl("-H", "Cache-Control: only-if-cached", f"{url}/blob/{cid}")
    assert (cached.status, error_of(cached)) == (412, "not_cached")
    head = curl("-I", f"{url}/blob/{cid}")  # the manifest is fetched, not the bytes
    assert (head.status, head.headers["content-length"]) == (200, str(len(data)))
    assert head.headers["etag"] == f'"{cid}"'
    part = curl("-r", f"{CS * 3 + 5}-{CS * 3 + 20}", f"{url}/blob/{cid}")
    assert part.status == 206
    assert part.body == data[CS * 3 + 5 : CS * 3 + 21]
    assert part.headers["content-range"] == f"bytes {CS * 3 + 5}-{CS * 3 + 20}/{len(data)}"
    still = curl("-H", "Cache-Control: only-if-cached", f"{url}/blob/{cid}")
    assert still.status == 412  # the range fetched only the chunk it needed
    unknown = curl(f"{url}/blob/blake3:" + "1" * 64)
    assert (unknown.status, error_of(unknown)) == (404, "not_found")

    other = tmp_path / "other.bin"
    other.write_bytes(payload(CS + 1, 77))
    lost = holder.ok("add", str(other)).split()[-1]
    wait_for(lambda: knows(node, lost, [holder]), 60, "the gateway node to learn the new blob")
    holder.stop()
    gone = curl(f"{url}/blob/{lost}")
    assert gone.status in (502, 504)
    assert int(gone.headers["retry-after"]) > 0
    error_of(gone)
    whole = curl(f"{url}/blob/{cid}")  # the holder is gone, and so is what it did not send
    assert whole.status in (502, 504) or whole.body == data


def _corrupt_on_disk(node: Daemon, cid: str, chunks: list[str], index: int) -> None:
    """Flip a byte of chunk ``index`` where the store keeps it: its own file (a file
    per chunk), else at its offset in the blob's file (a file per blob)."""
    blobs = node.home / "data" / "blobs"
    hexpart = chunks[index].removeprefix("blake3:")
    path, offset = blobs / hexpart[:2] / hexpart[2:], 0
    if not path.exists():
        whole = cid.removeprefix("blake3:")
        path = next(
            p for p in (blobs / whole[:2] / whole, blobs / whole[:2] / whole[2:]) if p.exists()
        )
        offset = index * CS
    with open(path, "r+b") as f:
        f.seek(offset)
        first = f.read(1)
        f.seek(offset)
        f.write(bytes([first[0] ^ 0xFF]))


def test_failure_mid_body_aborts_the_connection(gw: Gateway, tmp_path: Path) -> None:
    data = payload(40 * CS, 31)
    manifest, _ = chunk_blob(data)
    cid = gw.add(data, "doomed.bin", tmp_path)
    _corrupt_on_disk(gw.node, cid, list(manifest.chunks), 30)
    proc = subprocess.run(["curl", "-sS", "-o", str(tmp_path / "out"), f"{gw.url}/blob/{cid}"],
                          capture_output=True, timeout=90, check=False)  # fmt: skip
    got = (tmp_path / "out").read_bytes()
    assert proc.returncode == 18, proc.stderr  # "partial file": never a body that looks whole
    assert CS <= len(got) < len(data)
    assert got == data[: len(got)]  # every byte that went out was verified
    assert curl("-r", "0-9", f"{gw.url}/blob/{cid}").status in (404, 500)  # it is not served


async def test_abusive_clients_do_not_stop_others(gw: Gateway, tmp_path: Path) -> None:
    """200 idle connections, a slowloris and clients that leave mid-body, while
    normal requests go on; the slowloris is cut off by the server."""
    data = payload(64 * CS, 8)
    cid = gw.add(data, "big.bin", tmp_path)
    host, port = gw.url.removeprefix("http://").rsplit(":", 1)
    request = f"GET /blob/{cid} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    with trio.fail_after(120):
        idle = [await trio.open_tcp_stream(host, int(port)) for _ in range(200)]
        slow = await trio.open_tcp_stream(host, int(port))
        for _ in range(5):
            leaver = await trio.open_tcp_stream(host, int(port))
            await leaver.send_all(request)
            assert await leaver.receive_some(64 * 1024)
            await leaver.aclose()

        async def slowloris() -> int:
            sent = 0
            try:
                for byte in request:
                    await slow.send_all(bytes([byte]))
                    sent += 1
                    await trio.sleep(0.5)  # the client's pace, not synchronisation
            except trio.BrokenResourceError:
                return sent
            return sent

        async with trio.open_nursery() as nursery:
            cut_off = []
            nursery.start_soon(lambda: _collect(cut_off, slowloris))
            for _ in range(3):
                reply = await trio.to_thread.run_sync(curl, f"{gw.url}/blob/{cid}")
                assert reply.body == data
            with trio.move_on_after(60) as waited:
                while await slow.receive_some(1024):
                    pass
            assert not waited.cancelled_caught, "the server cut the slowloris off"
            nursery.cancel_scope.cancel()
        assert not cut_off or cut_off[0] < len(request)
        for stream in idle:
            await stream.aclose()
        await slow.aclose()
    assert curl(f"{gw.url}/status").status == 200


async def _collect(into: list[int], fn: Callable[[], Awaitable[int]]) -> None:
    into.append(await fn())


@pytest.mark.skipif(shutil.which("aria2c") is None, reason="aria2c is not installed")
def test_aria2c_four_connections_byte_exact(gw: Gateway, tmp_path: Path) -> None:
    data = payload(24 * CS + 1234, 12)
    cid = gw.add(data, "split.bin", tmp_path)
    before = _sent_requests(gw)
    proc = subprocess.run(
        ["aria2c", "-q", "-x4", "-s4", "-k1M", "--file-allocation=none", "-d", str(tmp_path),
         "-o", "got.bin", f"{gw.url}/blob/{cid}"],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode() + proc.stdout.decode()
    assert (tmp_path / "got.bin").read_bytes() == data
    assert _sent_requests(gw) - before >= 4, "aria2c used several ranged requests"


def _sent_requests(gw: Gateway) -> int:
    return _metric(gw, "http_requests_total")


def _metric(gw: Gateway, name: str) -> int:
    text = curl(f"{gw.url}/metrics").body.decode()
    return int(float(text.split(f"\nhearthfile_{name} ")[1].split()[0]))


MEDIA = Path(__file__).parent / "media"  # a 20 s VP8 test pattern and a 64x48 PNG
PAGE = """<!doctype html><html><body>
<img id="i" src="{url}/blob/{image}/dot.png">
<video id="v" preload="metadata" muted src="{url}/blob/{video}/clip.webm"></video>
<script>
const v = document.getElementById("v"), i = document.getElementById("i");
let sent = false;
function report(value) {{
  if (sent) return;
  sent = true;
  location.href = "{report}?" + encodeURIComponent(JSON.stringify(value));
}}
function seek() {{ v.currentTime = 15; }}
if (v.readyState >= 1) seek(); else v.addEventListener("loadedmetadata", seek);
v.addEventListener("seeked", () => report(
  {{image: i.complete ? i.naturalWidth : -1, duration: v.duration, time: v.currentTime}}));
v.addEventListener("error", () => report({{error: v.error.code}}));
</script></body></html>
"""


class _Reports(http.server.BaseHTTPRequestHandler):
    """Where the page sends the browser's own report (its query string)."""

    received: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.received.append(urllib.parse.unquote(self.path.partition("?")[2]))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_chromium_shows_an_image_and_seeks_a_video(gw: Gateway, tmp_path: Path) -> None:
    video = gw.node.ok("add", str(MEDIA / "clip.webm")).split()[-1]
    image = gw.node.ok("add", str(MEDIA / "dot.png")).split()[-1]
    reports = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Reports)
    threading.Thread(target=reports.serve_forever, daemon=True).start()
    report_url = f"http://127.0.0.1:{reports.server_address[1]}/report"
    page = tmp_path / "page.html"
    page.write_text(PAGE.format(url=gw.url, image=image, video=video, report=report_url))
    ranged = _metric(gw, "http_partial_responses_total")
    browser = subprocess.Popen(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu",
         f"--user-data-dir={tmp_path / 'profile'}", page.as_uri()],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: _Reports.received, 90, "the browser's report")
    finally:
        browser.kill()
        browser.wait()
        reports.shutdown()
    report = json.loads(_Reports.received[0])
    assert report == {"image": 64, "duration": 20, "time": 15}
    assert _metric(gw, "http_partial_responses_total") > ranged, "the video came by ranges"


async def test_an_upload_cut_short_keeps_nothing(gw: Gateway) -> None:
    host, port = gw.url.removeprefix("http://").rsplit(":", 1)
    blobs = json.loads(curl(f"{gw.url}/status").body)["blobs"]
    head = (
        f"PUT /blob?name=cut.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gw.token}\r\n"
        f"Content-Length: {10 * 1024 * 1024}\r\n\r\n"
    ).encode()
    with trio.fail_after(60):
        stream = await trio.open_tcp_stream(host, int(port))
        await stream.send_all(head + payload(3 * 1024 * 1024, 4))
        await stream.aclose()
    # the request ends once the server notices the client left
    wait_for(lambda: _metric(gw, "http_requests_active") == 1, 30, "the upload to end")
    assert json.loads(curl(f"{gw.url}/status").body)["blobs"] == blobs
    assert "cut.bin" not in curl(f"{gw.url}/blobs?limit=1000").body.decode()


def test_events_as_server_sent_events(gw: Gateway, tmp_path: Path) -> None:
    gw.add(b"an event first", "sse0.txt", tmp_path)
    since = json.loads(curl(f"{gw.url}/events?since=0&timeout=20").body)[-1]["id"] - 1
    proc = subprocess.Popen(
        ["curl", "-sS", "-N", "-H", "Accept: text/event-stream", f"{gw.url}/events?since={since}"],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        first = [proc.stdout.readline() for _ in range(3)]
        assert first[0] == f"id: {since + 1}\n".encode()
        event = json.loads(first[1].removeprefix(b"data: "))
        assert event["id"] == since + 1 and set(event) == {"id", "time", "type", "data"}
        assert first[2] == b"\n"
        gw.add(b"one more event", "sse.txt", tmp_path)  # a new event arrives on the stream
        assert proc.stdout.readline().startswith(b"id: ")
    finally:
        proc.kill()
        proc.wait()
