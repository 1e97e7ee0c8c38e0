"""What the node knows about itself and its peers, as results (trio-free shell).

``NodeDirectory`` answers ``hearthfile status``, ``peers`` and ``whohas`` from
the parts that hold the facts: the store, the pool's connections, gossip's
known peers, the source index and the trust book. It decides nothing and
changes nothing. The node's own CLI connections (trust ``self``) are never
shown as peers, and the node never lists itself as a holder.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from hearthfile import __version__
from hearthfile.blobs.store import BlobStore
from hearthfile.bus.pool import ConnectionInfo
from hearthfile.cids import Cid
from hearthfile.config import Address
from hearthfile.identity import NodeId
from hearthfile.services.results import Holder, NodeStatus, PeerRow
from hearthfile.trust.levels import TrustLevel


class Source(Protocol):
    @property
    def node(self) -> NodeId: ...
    @property
    def seen_at(self) -> float: ...


class Sources(Protocol):
    def sources(self, cid: Cid, now: float) -> Sequence[Source]: ...
    def __len__(self) -> int: ...


class Connections(Protocol):
    def connections(self) -> Sequence[ConnectionInfo]: ...


class NodeDirectory:
    def __init__(
        self,
        me: NodeId,
        store: BlobStore,
        pool: Connections,
        sources: Sources,
        *,
        trust_of: Callable[[NodeId], TrustLevel],
        gossip_peers: Callable[[], list[dict[str, Any]]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``gossip_peers()``: nodes gossip knows, as ``{"node_id", "addresses"}``."""
        self._me = me
        self._store = store
        self._pool = pool
        self._sources = sources
        self._trust_of = trust_of
        self._gossip_peers = gossip_peers
        self._clock = clock
        self._started = clock()
        self._listen: Address | None = None
        self._http: str | None = None

    @property
    def address(self) -> Address | None:
        """Where the node accepts peers; None until its server is up."""
        return self._listen

    def listening(self, address: Address, *, http: str | None = None) -> None:
        """Where the node accepts peers (and HTTP clients), once its servers are up."""
        self._listen = address
        self._http = http

    def _peers_now(self) -> list[ConnectionInfo]:
        return [
            c for c in self._pool.connections() if self._trust_of(c.peer) is not TrustLevel.SELF
        ]

    def status(self) -> NodeStatus:
        return NodeStatus(
            node_id=str(self._me),
            version=__version__,
            pid=os.getpid(),
            listen=str(self._listen) if self._listen else None,
            http=self._http,
            uptime_s=self._clock() - self._started,
            peers=len({c.peer for c in self._peers_now()}),
            blobs=self._store.count(),
            bytes_stored=self._store.total_bytes(),
            data_dir=str(self._store.data_dir),
            known_sources=len(self._sources),
        )

    def peers(self) -> list[PeerRow]:
        """Connected peers, then peers gossip knows that we are not connected to."""
        rows = [
            PeerRow(
                node_id=str(c.peer),
                remote=c.remote,
                direction=c.direction,
                trust=self._trust_of(c.peer).label,
                connected_since=c.connected_since,
                bytes_in=c.bytes_in,
                bytes_out=c.bytes_out,
            )
            for c in self._peers_now()
        ]
        shown = {r.node_id for r in rows} | {str(self._me)}
        for known in self._gossip_peers():
            if known["node_id"] in shown:
                continue
            rows.append(
                PeerRow(
                    node_id=known["node_id"],
                    remote=",".join(known["addresses"]),
                    direction="gossip",
                    trust=self._trust_of(NodeId.parse(known["node_id"])).label,
                    connected_since=None,
                    bytes_in=0,
                    bytes_out=0,
                )
            )
        return rows

    def whohas(self, cid: Cid) -> list[Holder]:
        """Known holders of ``cid`` other than this node, with how long ago each
        said so and whether we are connected to it now."""
        now = self._clock()
        online = {c.peer for c in self._pool.connections()}
        return [
            Holder(node_id=str(s.node), age_s=now - s.seen_at, online=s.node in online)
            for s in self._sources.sources(cid, now)
            if s.node != self._me
        ]
