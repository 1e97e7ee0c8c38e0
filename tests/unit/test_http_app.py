"""The gateway's ASGI app driven directly: limits, errors, metrics text."""

from __future__ import annotations

import json
from typing import Any, cast

import trio

from hearthfile.services.http.app import (
    Gateway,
    GatewayLimits,
    _index_ranges,
    render_metrics,
)
from hearthfile.services.http.backend import GatewayBackend, Metric

CID = "blake3:" + "ab" * 32


class _Stuck:
    """A backend whose blob lookup waits until released."""

    def __init__(self) -> None:
        self.entered = trio.Event()
        self.release = trio.Event()

    async def blob(self, cid: str, *, fetch: bool) -> Any:
        self.entered.set()
        await self.release.wait()
        raise AssertionError("not reached in this test")


async def _request(app: Gateway, path: str, method: str = "GET") -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await trio.sleep_forever()
        raise AssertionError

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "query_string": b"", "headers": []}
    await app(scope, receive, send)
    return sent


async def test_requests_past_the_limit_get_429() -> None:
    stuck = _Stuck()
    app = Gateway(cast(GatewayBackend, stuck), b"token", GatewayLimits(max_active_requests=1))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_request, app, f"/blob/{CID}")
            await stuck.entered.wait()
            refused = await _request(app, f"/blob/{CID}")
            nursery.cancel_scope.cancel()
    start, body = refused
    assert start["status"] == 429
    assert (b"retry-after", b"1") in start["headers"]
    assert json.loads(body["body"])["error"] == "busy"
    assert app.counters.refused == 1


async def test_errors_are_one_line_json() -> None:
    app = Gateway(cast(GatewayBackend, _Stuck()), b"token")
    for path, method, status in [
        ("/blob/nope", "GET", 400),
        ("/nowhere", "GET", 404),
        ("/status", "DELETE", 405),
        (f"/blob/{CID}", "DELETE", 401),
    ]:
        start, body = await _request(app, path, method)
        assert start["status"] == status
        assert body["body"].count(b"\n") == 1
        assert set(json.loads(body["body"])) == {"error", "detail"}


def test_metrics_text() -> None:
    text = render_metrics([Metric("x_total", "counter", "Things.", 3)])
    assert text.splitlines() == [
        "# HELP hearthfile_x_total Things.",
        "# TYPE hearthfile_x_total counter",
        "hearthfile_x_total 3",
    ]


def test_every_counter_is_exported() -> None:
    from hearthfile.events import Counters
    from hearthfile.services.http.node_gateway import _COUNTERS

    assert set(Counters().snapshot()) == set(_COUNTERS)
    for name, kind, _ in _COUNTERS.values():
        assert name.endswith("_total") == (kind == "counter")


def test_index_ranges() -> None:
    assert _index_ranges([]) == []
    assert _index_ranges([0, 1, 2, 5, 7, 8]) == [[0, 3], [5, 6], [7, 9]]
