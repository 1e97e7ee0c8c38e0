"""The node daemon: store, bus server, peers and services in one nursery (trio shell).

``serve_node`` builds each part from its own sub-config and wires them with
callables; it decides nothing a part could decide itself. One daemon runs per
home: it holds ``<home>/daemon.lock`` for its life and writes where it listens
to ``<home>/daemon.json``, which is how the CLI finds it. The CLI connects with
the node's own key, so it is the only caller at trust ``self``.

Log lines are ``event key=value ...`` so they can be grepped and parsed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import logging
import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import trio

from hearthfile import __version__, transfer
from hearthfile.blobs.chunker import Manifest
from hearthfile.blobs.facade import AsyncStore
from hearthfile.blobs.store import BlobStore
from hearthfile.bus.capability import Registry, TrustLevel
from hearthfile.bus.channel import ChannelLimits
from hearthfile.bus.connection import Connection
from hearthfile.bus.pool import PeerConnected, PeerEvent, PeerPool
from hearthfile.bus.server import serve_secure
from hearthfile.cids import Cid
from hearthfile.config import Address, Config, parse_address
from hearthfile.errors import PeerUnavailable, ServiceError
from hearthfile.gossip.index import SourceIndex
from hearthfile.gossip.protocol import Gossip
from hearthfile.gossip.service import GossipService
from hearthfile.home import (
    control_socket,
    home_lock,
    load_or_create_http_token,
    load_or_create_key,
    write_info,
)
from hearthfile.identity import NodeId, NodeKey
from hearthfile.services.events import EventLog
from hearthfile.services.file.service import FileService
from hearthfile.services.http.app import Gateway
from hearthfile.services.http.node_gateway import NodeGateway
from hearthfile.services.http.server import open_http_socket, serve_http
from hearthfile.services.introduce import IntroService, IntroSpreader
from hearthfile.services.invite import InviteService, reachable
from hearthfile.services.node import NodeService
from hearthfile.services.trust import LiveTrust, TrustService
from hearthfile.trust.book import TrustBook
from hearthfile.trust.storage import IntroFile, open_book, open_intros, open_invites

log = logging.getLogger("hearthfile.node")

GC_INTERVAL_S: Final = 60.0
SOURCE_QUERY_TIMEOUT_S: Final = 5.0
#: Sources a fetch draws on at once.
MAX_SOURCES: Final = 8


def peer_rows(pool: PeerPool, trust: TrustBook) -> list[dict[str, Any]]:
    """What ``hearthfile peers`` shows; the node's own CLI connections are left out."""
    return [
        {
            "node_id": str(c.peer),
            "remote": c.remote,
            "direction": c.direction,
            "trust": trust.level(c.peer).label,
            "connected_since": c.connected_since,
            "bytes_in": c.bytes_in,
            "bytes_out": c.bytes_out,
        }
        for c in pool.connections()
        if trust.level(c.peer) is not TrustLevel.SELF
    ]


def log_peer_event(event: PeerEvent) -> None:
    if isinstance(event, PeerConnected):
        log.info(
            "peer_up peer=%s direction=%s remote=%s",
            event.peer.short(),
            event.direction,
            event.remote,
        )
    else:
        log.info("peer_down peer=%s reason=%s", event.peer.short(), event.reason.replace(" ", "_"))


def channel_limits(config: Config) -> ChannelLimits:
    lim = config.limits
    return ChannelLimits(
        max_message_bytes=lim.max_message_bytes,
        handshake_timeout_s=lim.handshake_timeout_s,
        idle_timeout_s=lim.idle_timeout_s,
        max_unauthenticated=lim.max_unauthenticated,
        max_connections_per_peer=lim.max_connections_per_peer,
        receive_buffer_bytes=lim.receive_buffer_bytes,
    )


async def serve_node(
    home: Path, config: Config, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the node until cancelled; ``task_status.started(port)`` once listening."""
    key = load_or_create_key(home)
    me = key.node_id
    limits = channel_limits(config)
    with home_lock(home):
        store = BlobStore(
            config.node.data_dir or home / "data",
            gc_threshold=config.file.gc_threshold,
            gc_target=config.file.gc_target,
            max_store_bytes=config.file.max_store_bytes,
            min_free_bytes=config.file.min_free_bytes,
            direct_io=config.file.direct_io,
        )
        try:
            await _run(home, config, key, me, store, limits, task_status)
        finally:
            store.close()


async def _run(
    home: Path,
    config: Config,
    key: NodeKey,
    me: NodeId,
    store: BlobStore,
    limits: ChannelLimits,
    task_status: trio.TaskStatus[int],
) -> None:
    started = time.time()
    trust = open_book(home, me, config.trust, open_membership=config.open_membership)
    sources = SourceIndex(ttl_s=config.gossip.record_ttl_s)
    registry = Registry()
    transfers = transfer.Transfers()
    events = EventLog()
    listen: list[Address] = []
    http_sock = open_http_socket(config.http)
    http_listen: list[str] = []

    def member(node: NodeId) -> bool:
        return node != me and trust.level(node) >= TrustLevel.MEMBER

    def on_peer_event(event: PeerEvent) -> None:
        log_peer_event(event)
        if isinstance(event, PeerConnected):
            events.emit("peer.up", node_id=str(event.peer), remote=event.remote)
            live_trust.peer_up(event.peer)
        else:
            events.emit("peer.down", node_id=str(event.peer), reason=event.reason)
            live_trust.peer_down(event.peer)

    pool = PeerPool(key, registry, trust.level, limits=limits, on_event=on_peer_event)
    gossip = GossipService(
        Gossip(me, config.gossip, random.Random(), admit=member, sign=key.sign),
        config.gossip,
        sources,
        pool,
        events.emit,
        dialable=member,
    )

    def announce(added: list[Cid], removed: list[Cid]) -> None:
        gossip.publish(added, removed)

    def others() -> list[Connection]:
        peers = {c.peer for c in pool.connections()} - {me}
        return [c for c in map(pool.connection, peers) if c is not None]

    async def connect_to(node: NodeId) -> Connection | None:
        """A connection to a known source, dialing the address gossip gave for it."""
        conn = pool.connection(node)
        if conn is not None:
            return conn
        for text in gossip.addresses(node):
            try:
                return await pool.get(node, parse_address(text))
            except (ValueError, PeerUnavailable):
                continue
        return None

    async def find_sources(cid: Cid) -> list[Connection]:
        """Holders from the SourceIndex (gossip, adverts), else by asking every peer."""
        found = await known_sources(cid)

        async def ask(conn: Connection) -> None:
            try:
                answer = await conn.call(
                    "file.list", {"prefix": cid, "limit": 1}, timeout_s=SOURCE_QUERY_TIMEOUT_S
                )
            except (ServiceError, PeerUnavailable):
                return
            items = answer.get("items") if isinstance(answer, dict) else None
            if items and isinstance(items[0], dict) and items[0].get("cid") == cid:
                sources.record(conn.peer, [cid], time.time())
                if conn not in found:
                    found.append(conn)

        if not found:
            async with trio.open_nursery() as nursery:
                for conn in others():
                    nursery.start_soon(ask, conn)
        return found

    async def known_sources(cid: Cid) -> list[Connection]:
        found = []
        for source in sources.sources(cid, time.time())[:MAX_SOURCES]:
            conn = await connect_to(source.node)
            if conn is not None:
                found.append(conn)
        return found

    async def advertise_partial(cid: Cid) -> None:
        """Tell connected members we are fetching ``cid``: they may draw on us for
        the chunks we already hold (swarming), instead of all hitting the origin."""

        async def tell(conn: Connection) -> None:
            with contextlib.suppress(ServiceError, PeerUnavailable):
                await conn.call("file.advertise", {"cids": [cid]}, timeout_s=5)

        async with trio.open_nursery() as nursery:
            for conn in others():
                if member(conn.peer):
                    nursery.start_soon(tell, conn)

    async def fetch_now(
        cid: Cid, span: tuple[int, int] | None, sequential: bool, progress: transfer.ProgressFn
    ) -> Manifest:
        started = trio.current_time()
        found = await find_sources(cid)
        await advertise_partial(cid)
        try:
            manifest = await transfer.fetch_blob(
                store,
                cid,
                found,
                progress=progress,
                span=span,
                emit=events.emit,
                more_sources=functools.partial(known_sources, cid),
                sequential=sequential,
            )
        except ServiceError as exc:
            events.emit("transfer.failed", cid=cid, code=exc.code, detail=exc.detail)
            raise
        log.info(
            "fetched cid=%s size=%d sources=%d span=%s seconds=%.3f",
            cid,
            manifest.size,
            len(found),
            span,
            trio.current_time() - started,
        )
        events.emit("transfer.done", cid=cid, size=manifest.size, sources=len(found))
        if span is None:
            announce([cid], [])
        return manifest

    async def fetch(
        cid: Cid, span: tuple[int, int] | None, sequential: bool, progress: transfer.ProgressFn
    ) -> Manifest:
        if await trio.to_thread.run_sync(store.has_blob, cid):
            return await trio.to_thread.run_sync(store.read_manifest, cid)
        job = functools.partial(fetch_now, cid, span, sequential)
        return await transfers.run(cid, span, job, progress)

    async def push(
        cid: Cid, target_text: str, progress: transfer.ProgressFn
    ) -> transfer.PushResult:
        try:
            target = NodeId.parse(target_text)
        except ValueError as exc:
            raise ServiceError("bad_request", str(exc)) from None
        try:
            conn = await pool.get(target)
        except PeerUnavailable:
            raise ServiceError("unavailable", f"cannot reach {target_text}") from None
        result = await transfer.push_blob(store, cid, conn, progress=progress)
        log.info(
            "pushed cid=%s peer=%s sent=%d skipped=%d",
            cid,
            target.short(),
            result.sent,
            result.skipped,
        )
        return result

    def status() -> dict[str, Any]:
        return {
            "node_id": str(me),
            "version": __version__,
            "pid": os.getpid(),
            "listen": str(listen[0]) if listen else None,
            "http": http_listen[0] if http_listen else None,
            "uptime_s": time.time() - started,
            "peers": len(others()),
            "blobs": store.count(),
            "bytes_stored": store.total_bytes(),
            "data_dir": str(store.data_dir),
            "known_sources": len(sources),
        }

    def whohas(cid: Cid) -> list[dict[str, Any]]:
        now = time.time()
        return [
            {"node_id": str(s.node), "age_s": now - s.seen_at} for s in sources.sources(cid, now)
        ]

    def peers() -> list[dict[str, Any]]:
        rows = peer_rows(pool, trust)
        connected = {r["node_id"] for r in rows}
        for known in gossip.known_peers():
            if known["node_id"] not in connected:
                node = NodeId.parse(known["node_id"])
                rows.append(
                    {
                        "node_id": known["node_id"],
                        "remote": ",".join(known["addresses"]),
                        "direction": "gossip",
                        "trust": trust.level(node).label,
                        "connected_since": None,
                        "bytes_in": 0,
                        "bytes_out": 0,
                    }
                )
        return rows

    FileService(
        AsyncStore(store),
        record_sources=lambda node, cids: sources.record(node, cids, time.time()),
        on_stored=lambda cid: announce([cid], []),
        min_free_bytes=config.file.min_free_bytes,
    ).register(registry)
    gossip.register(registry)
    intro_spreader = IntroSpreader(pool, member)
    live_trust = LiveTrust(
        trust,
        pool,
        gossip,
        events.emit,
        intros=open_intros(home, me, key.sign),
        spreader=intro_spreader,
        save_intros=IntroFile(home).save,
    )
    TrustService(live_trust).register(registry)
    IntroService(live_trust).register(registry)
    InviteService(
        live_trust, open_invites(home), pool, lambda: reachable(listen[0]) if listen else []
    ).register(registry)
    NodeService(
        store,
        fetch=fetch,
        push=push,
        status=status,
        peers=peers,
        transfers=transfers,
        whohas=whohas,
        events=events,
        announce=announce,
    ).register(registry)

    for spec in config.bootstrap:
        pool.keep_connected(spec.address, NodeId.parse(spec.node_id) if spec.node_id else None)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.serve)
        port = await nursery.start(
            lambda task_status: serve_secure(
                config.node.listen,
                key,
                pool.serve_inbound,
                limits=limits,
                control_path=control_socket(home),
                task_status=task_status,
            )
        )
        listen.append(Address(config.node.listen.host, port))
        write_info(home, listen[0], me, store.data_dir)
        log.info("node_started node=%s listen=%s data=%s", me, listen[0], store.data_dir)
        await nursery.start(gossip.serve)
        await nursery.start(intro_spreader.serve)
        held = [i.cid for i in await trio.to_thread.run_sync(store.list_cids)]
        gossip.publish(held, [], addresses=[str(listen[0])])
        nursery.start_soon(_gc_loop, store, announce, events)
        if http_sock is not None:
            gateway = NodeGateway(
                store,
                fetch=fetch,
                announce=announce,
                status=status,
                events=events,
                transfers=transfers,
                holders=lambda cid: len(whohas(cid)),
            )
            token = load_or_create_http_token(home)
            http_listen.append(await nursery.start(serve_http, Gateway(gateway, token), http_sock))
        task_status.started(port)


async def _gc_loop(
    store: BlobStore, announce: Callable[[list[Cid], list[Cid]], None], events: EventLog
) -> None:
    """Evict past the store's limits (``BlobStore.bytes_to_free``); each evicted
    blob is an event and is withdrawn."""
    while True:
        await trio.sleep(GC_INTERVAL_S)
        report = await trio.to_thread.run_sync(store.gc)
        if report.blobs_removed:
            log.info("gc removed=%d bytes_freed=%d", len(report.blobs_removed), report.bytes_freed)
            for cid in report.blobs_removed:
                events.emit("blob.evicted", cid=cid)
            announce([], list(report.blobs_removed))


def tune_malloc() -> None:
    """Keep 256 KiB frame buffers on the heap instead of fresh mmaps.

    With glibc's defaults each such buffer is a new mapping that page-faults on
    first touch, which costs as much as hashing the chunk (PERF-NOTES.md item 5).
    Same effect as MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_; a no-op where
    ``mallopt`` does not exist. Two arenas, not eight per core: chunks are read and
    written in worker threads, and each thread's arena kept its own high-water mark
    (a swarm fetcher peaked at 125 MB with the default and 97 MB with two).
    """
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(m_mmap_threshold, 16 * 1024 * 1024)
        libc.mallopt(m_trim_threshold, 256 * 1024 * 1024)
        libc.mallopt(m_arena_max, 2)
    except (OSError, AttributeError):
        pass


async def run_until_signalled(home: Path, config: Config) -> None:
    """``hearthfile run``: serve until SIGINT or SIGTERM, then stop cleanly."""
    tune_malloc()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_node, home, config)
            async for signum in signals:
                log.info("stopping signal=%s", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
