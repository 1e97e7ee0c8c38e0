"""``/downloads`` on the HTTP gateway (DESIGN.md sections 10 and 12; trio shell).

The gateway hands every request under ``/downloads`` to ``DownloadRoutes``
after checking the bearer token of writes; answers are JSON records::

    POST   /downloads                {url, name?, expect?, refresh?} -> 201 new, 200 existing
    GET    /downloads[?url=&after=&limit=]   a page of records {items, next}, in id order
    GET    /downloads/{id}           one record
    POST   /downloads/{id}/pause     the record
    POST   /downloads/{id}/resume    the record
    DELETE /downloads/{id}           {id, removed}; a finished blob stays in the store
    GET    /downloads/{id}/content   303 to /blob/{cid}/{name} once Completed, 409 before
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any, Final

from hearthfile.errors import ServiceError
from hearthfile.services.downloads.core import DownloadError, Status
from hearthfile.services.downloads.service import Downloads
from hearthfile.services.http.app import Request, Response, page_limit
from hearthfile.services.http.backend import GatewayError

#: A POST /downloads body: a URL and a few short fields.
MAX_BODY_BYTES: Final = 16 * 1024
#: Records one page of ``GET /downloads`` holds at most (``?limit=``, default 100).
MAX_LIST_LIMIT: Final = 1000
_STATUS_OF: Final = {"not_found": 404, "bad_request": 400, "capacity_exceeded": 507}


class DownloadRoutes:
    def __init__(self, downloads: Downloads) -> None:
        self._downloads = downloads

    async def handle(self, request: Request, response: Response, args: list[str]) -> None:
        """``args``: the path segments after ``downloads``."""
        method = "GET" if request.method == "HEAD" else request.method
        try:
            await self._route(method, request, response, args)
        except DownloadError as exc:
            raise GatewayError(400, "bad_request", str(exc)) from None
        except ServiceError as exc:
            status = _STATUS_OF.get(exc.code, 500)
            raise GatewayError(status, exc.code, exc.detail) from None

    async def _route(
        self, method: str, request: Request, response: Response, args: list[str]
    ) -> None:
        d = self._downloads
        match (method, args):
            case ("POST", []):
                body = _json_object(await request.body(MAX_BODY_BYTES))
                refresh = body.get("refresh", False)
                if not isinstance(refresh, bool):
                    raise DownloadError("refresh: expected true or false")
                rec, new = await d.add(
                    body.get("url"), body.get("name"), body.get("expect"), refresh
                )
                await response.json(201 if new else 200, rec)
            case ("GET", []):
                limit = page_limit(request, MAX_LIST_LIMIT)
                items, following = d.page(request.arg("url") or None, request.arg("after"), limit)
                await response.json(200, {"items": items, "next": following})
            case ("GET", [id_]):
                await response.json(200, d.show(id_))
            case ("DELETE", [id_]):
                await d.remove(id_)
                await response.json(200, {"id": id_, "removed": True})
            case ("POST", [id_, "pause"]):
                await response.json(200, await d.pause(id_))
            case ("POST", [id_, "resume"]):
                await response.json(200, await d.resume(id_))
            case ("GET", [id_, "content"]):
                await self._content(response, id_)
            case _:
                raise GatewayError(404, "not_found", f"no route {request.method} {request.path}")

    async def _content(self, response: Response, id_: str) -> None:
        rec = self._downloads.record(id_)
        if rec.status is not Status.COMPLETED or rec.cid is None:
            raise GatewayError(409, "not_ready", f"download {id_} is {rec.status.value}")
        location = f"/blob/{rec.cid}/{urllib.parse.quote(rec.name, safe='')}"
        await response.json(303, {"location": location}, ((b"location", location.encode()),))


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        raise DownloadError(
            "body: expected a JSON object {url, name?, expect?, refresh?}"
        ) from None
    if not isinstance(value, dict):
        raise DownloadError("body: expected a JSON object {url, name?, expect?, refresh?}")
    return value
