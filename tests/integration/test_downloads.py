"""URL downloads through real daemons: the CLI, the HTTP routes, kill -9 (DESIGN.md 8, 10, 12).

The origin (tests/origin.py) runs in a thread of the test process; the daemons
are ``hearthfile run`` processes that fetch from it over loopback.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hearthfile.services.downloads.core import url_key
from tests.integration.nodes import Daemon, wait_for
from tests.origin import Origin, Served
from tests.unit.test_chunker import payload

MiB = 1024 * 1024
FAST_FLUSH = "downloads:\n  flush_interval_s: 0.1\n  flush_bytes: 256KiB\n"


@pytest.fixture
def origin() -> Iterator[Origin]:
    o = Origin().start()
    yield o
    o.stop()


def show(node: Daemon, id_: str) -> dict[str, Any]:
    return json.loads(node.ok("--json", "downloads", "show", id_))


def test_download_then_cat_is_byte_exact(
    make_node: Callable[[str], Daemon], origin: Origin
) -> None:
    data = payload(5 * MiB + 99, seed=31)
    origin.files["/files/data.bin"] = Served(data)
    node = make_node("a").start()
    result = node.cli("download", origin.url("/files/data.bin"), "--name", "data.bin")
    assert result.returncode == 0, result.stderr
    cid = result.out.strip().splitlines()[-1]
    assert node.cli("cat", cid).stdout == data
    rows = json.loads(node.ok("--json", "downloads"))
    assert [(r["status"], r["cid"], r["name"], r["source"]) for r in rows] == [
        ("Completed", cid, "data.bin", "origin")
    ]
    # The same URL again is the same download: no second trip to the origin.
    assert node.ok("download", origin.url("/files/data.bin")).strip() == cid
    assert len(origin.hits("/files/data.bin")) == 1
    assert "downloads remove" not in node.ok("downloads", "list")
    node.ok("downloads", "remove", rows[0]["id"])
    assert json.loads(node.ok("--json", "downloads")) == []
    assert node.cli("cat", cid).stdout == data  # the blob stays: it is the user's


def test_download_failures_are_one_line_and_exit_1(
    make_node: Callable[[str], Daemon], origin: Origin
) -> None:
    origin.files["/gone"] = Served(status=404)
    node = make_node("a").start()
    missing = node.cli("download", origin.url("/gone"))
    assert missing.returncode == 1
    assert missing.stderr.strip().count("\n") == 0 and "HTTP 404" in missing.stderr
    bad = node.cli("download", "file:///etc/passwd")
    assert bad.returncode == 2 and "only http and https" in bad.stderr
    usage = node.cli("download", "http://x/", "--expect", "md5:00")
    assert usage.returncode == 2 and "expect" in usage.stderr


def test_kill_9_mid_download_resumes_with_a_range_request(
    make_node: Callable[[str], Daemon], origin: Origin
) -> None:
    data = payload(8 * MiB, seed=32)
    served = origin.files["/big.iso"] = Served(data, hold_after=3 * MiB)
    node = make_node("a").start(config=FAST_FLUSH)
    id_ = node.ok("download", origin.url("/big.iso"), "--detach").strip()

    def stored() -> int:
        """Bytes the record on disk says are stored (what a kill keeps)."""
        with sqlite3.connect(node.home / "data" / "downloads.sqlite3") as db:
            row = db.execute("SELECT downloaded_bytes FROM downloads").fetchone()
        return int(row[0]) if row else 0

    wait_for(lambda: stored() == 3 * MiB, 60, "3 MiB to be stored")
    assert node.stop(signal.SIGKILL) == -signal.SIGKILL  # the kill landed
    served.release.set()
    node.start(config=FAST_FLUSH)
    done = wait_for(lambda: (r := show(node, id_))["status"] == "Completed" and r, 60, "the end")
    assert node.cli("cat", done["cid"]).stdout == data
    hits = origin.hits("/big.iso")
    assert len(hits) == 2 and hits[0].range is None, hits
    assert hits[0].sent < len(data)  # the kill came mid-body
    assert (hits[1].range, hits[1].if_range, hits[1].status) == (f"bytes={3 * MiB}-", '"v1"', 206)
    assert hits[1].sent == len(data) - 3 * MiB


def test_http_routes(make_node: Callable[[str], Daemon], origin: Origin) -> None:
    data = payload(MiB + 1, seed=33)
    origin.files["/h/page.txt"] = Served(data, content_type="text/plain")
    origin.files["/slow"] = Served(payload(4 * MiB, seed=34), rate=MiB)
    node = make_node("a").start(http="127.0.0.1:0")
    base, token = node.http_url, (node.home / "http.token").read_text().strip()

    def curl(*args: str) -> tuple[int, str, str]:
        proc = subprocess.run(
            [
                "curl",
                "-sS",
                "--max-time",
                "30",
                "-o",
                "-",
                "-w",
                "\n%{http_code} %{redirect_url}",
                *list(args),
            ],
            capture_output=True,
            text=True,
            check=True,
            errors="replace",
        )
        body, _, tail = proc.stdout.rpartition("\n")
        code, _, location = tail.partition(" ")
        return int(code), body, location

    auth = ["-H", f"Authorization: Bearer {token}"]
    request = json.dumps({"url": origin.url("/h/page.txt")})
    assert curl("-X", "POST", base + "/downloads", "-d", request)[0] == 401
    code, body, _ = curl(*auth, "-X", "POST", base + "/downloads", "-d", request)
    rec = json.loads(body)
    assert code == 201 and rec["status"] in ("Pending", "InProgress", "Completed")
    wait_for(lambda: json.loads(curl(base + f"/downloads/{rec['id']}")[1])["status"] == "Completed")
    code, _, location = curl(base + f"/downloads/{rec['id']}/content")
    assert code == 303 and location.endswith("/page.txt")
    fetched = subprocess.run(
        ["curl", "-sSL", base + f"/downloads/{rec['id']}/content"], capture_output=True, check=True
    )
    assert fetched.stdout == data
    listed = json.loads(curl(base + "/downloads?url=" + origin.url("/h/page.txt"))[1])
    assert [r["id"] for r in listed["items"]] == [rec["id"]] and listed["next"] is None
    code, body, _ = curl(*auth, "-X", "POST", base + "/downloads", "-d", request)
    assert code == 200 and json.loads(body)["id"] == rec["id"]

    slow = json.loads(
        curl(
            *auth, "-X", "POST", base + "/downloads", "-d", json.dumps({"url": origin.url("/slow")})
        )[1]
    )
    assert curl(base + f"/downloads/{slow['id']}/content")[0] == 409
    pages, after = [], ""
    while after is not None:  # one record a page, in id order, each once
        page = json.loads(curl(base + f"/downloads?limit=1&after={after}")[1])
        pages += [r["id"] for r in page["items"]]
        after = page["next"]
    assert pages == sorted([rec["id"], slow["id"]])
    assert curl(base + "/downloads?limit=0")[0] == 400
    code, body, _ = curl(*auth, "-X", "POST", base + f"/downloads/{slow['id']}/pause")
    assert code == 200 and json.loads(body)["status"] == "Paused"
    assert curl("-X", "POST", base + f"/downloads/{slow['id']}/resume")[0] == 401
    code, body, _ = curl(*auth, "-X", "POST", base + f"/downloads/{slow['id']}/resume")
    assert code == 200 and json.loads(body)["status"] in ("Pending", "InProgress")
    assert curl(*auth, "-X", "DELETE", base + f"/downloads/{slow['id']}")[0] == 200
    assert curl(base + f"/downloads/{slow['id']}")[0] == 404
    code, body, _ = curl(*auth, "-X", "POST", base + "/downloads", "-d", '{"url": "ftp://x/y"}')
    assert code == 400 and json.loads(body)["error"] == "bad_request"


def test_second_node_gets_a_cached_url_from_the_first_not_the_origin(
    make_node: Callable[[str], Daemon], origin: Origin
) -> None:
    data = payload(3 * MiB + 5, seed=35)
    origin.files["/shared.tar"] = Served(data)
    url = origin.url("/shared.tar")
    n1, n2 = make_node("n1"), make_node("n2")
    trust = f"trust:\n  {n1.node_id}: member\n  {n2.node_id}: member\n"
    config = f"gossip:\n  interval_s: 0.3\n{trust}"
    n1.start(config=config)
    n2.start(n1, config=config)
    cid = n1.ok("download", url).strip()
    key = url_key(url)
    wait_for(
        lambda: n1.node_id in n2.ok("whohas", key) and n1.node_id in n2.ok("whohas", cid),
        60,
        "node 2 to learn node 1 cached the URL",
    )
    assert n2.ok("download", url).strip() == cid
    assert len(origin.hits("/shared.tar")) == 1  # the origin saw node 1 only
    rec = json.loads(n2.ok("--json", "downloads"))[0]
    assert (rec["status"], rec["source"], rec["name"]) == ("Completed", "peers", "shared.tar")
    assert n2.cli("cat", cid).stdout == data
    stat = json.loads(n2.ok("--json", "stat", cid))
    assert stat["pinned"] is True
    # --refresh goes to the origin anyway.
    assert n2.ok("download", url, "--refresh").strip() == cid
    assert len(origin.hits("/shared.tar")) == 2
    assert json.loads(n2.ok("--json", "downloads"))[0]["source"] == "origin"
