"""A URL another node already cached: find it, fetch it from peers (trio shell).

A node that completes a download announces two CIDs with its holdings: the
blob's, and the URL's key (``core.url_key``). A node asked for the same URL
looks the key up in its SourceIndex (filled by signed gossip, so only members'
claims count), asks the announcing holders ``download.resolve {url}`` for the
blob CID, and fetches that blob like any other: from every holder at once,
each chunk verified, the manifest's content checked before it is complete.
The holder is trusted for the URL -> CID claim as far as a member is trusted
for anything it serves; ``expect`` still checks the whole file, and
``refresh`` skips peers altogether.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

from hearthfile.blobs.chunker import Manifest
from hearthfile.cids import Cid, CidError, parse_cid
from hearthfile.errors import PeerUnavailable, ServiceError
from hearthfile.services.downloads.core import url_key
from hearthfile.transfer.peer import Peer

log = logging.getLogger(__name__)

RESOLVE_TIMEOUT_S: Final = 10.0
#: Holders asked for the CID before giving up on peers.
MAX_ASKED: Final = 4


Holders = Callable[[Cid], Awaitable[list[Peer]]]
Fetch = Callable[[Cid], Awaitable[Manifest]]


class PeerCache:
    def __init__(self, holders: Holders, fetch: Fetch) -> None:
        """``holders(cid)``: connections to the nodes gossip says hold ``cid``;
        ``fetch(cid)``: make the blob complete here from peers."""
        self._holders = holders
        self._fetch = fetch

    async def lookup(self, url: str) -> Cid | None:
        """The blob CID a member says it downloaded ``url`` as, if any."""
        for peer in (await self._holders(url_key(url)))[:MAX_ASKED]:
            try:
                answer = await peer.call(
                    "download.resolve", {"url": url}, timeout_s=RESOLVE_TIMEOUT_S
                )
                return parse_cid(answer["cid"])
            except (ServiceError, PeerUnavailable):
                continue
            except (CidError, KeyError, TypeError):
                log.warning("download.resolve: a malformed answer from %s", peer.peer.short())
                continue
        return None

    async def fetch(self, cid: Cid) -> Manifest:
        return await self._fetch(cid)
