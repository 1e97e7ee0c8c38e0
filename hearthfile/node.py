"""The node daemon: store, bus server, peers and services in one nursery (trio shell).

``serve_node`` builds each part from its own sub-config and wires them with
callables; it decides nothing a part could decide itself. One daemon runs per
home: it holds ``<home>/daemon.lock`` for its life and writes where it listens
to ``<home>/daemon.json``, which is how the CLI finds it. The CLI connects with
the node's own key, so it is the only caller at trust ``self``.

Log lines are ``event key=value ...`` so they can be grepped and parsed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import random
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import trio

from hearthfile.blobs.facade import AsyncStore
from hearthfile.blobs.store import BlobStore
from hearthfile.bus import wsmask
from hearthfile.bus.capability import Registry, TrustLevel
from hearthfile.bus.channel import ChannelLimits
from hearthfile.bus.pool import PeerPool
from hearthfile.bus.server import serve_secure
from hearthfile.config import Address, Config, parse_address
from hearthfile.events import (
    BlobEvicted,
    Counters,
    Event,
    EventBus,
    PeerConnected,
    PeerDisconnected,
    PeerEvent,
    Publish,
)
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
from hearthfile.services.directory import NodeDirectory
from hearthfile.services.downloads.peers import PeerCache
from hearthfile.services.downloads.records import RecordBook
from hearthfile.services.downloads.routes import DownloadRoutes
from hearthfile.services.downloads.service import Downloads
from hearthfile.services.file.service import FileService
from hearthfile.services.http.app import Gateway
from hearthfile.services.http.node_gateway import NodeGateway
from hearthfile.services.http.server import open_http_socket, serve_http
from hearthfile.services.introduce import IntroService, IntroSpreader
from hearthfile.services.invite import InviteService, reachable
from hearthfile.services.node import NodeService
from hearthfile.services.results import to_wire
from hearthfile.services.trust import LiveTrust, TrustService
from hearthfile.transfer.manager import Announce, TransferManager
from hearthfile.transfer.sources import SourceFinder
from hearthfile.trust.book import TrustBook
from hearthfile.trust.storage import IntroFile, open_book, open_intros, open_invites

log = logging.getLogger("hearthfile.node")

GC_INTERVAL_S: Final = 60.0


async def serve_node(
    home: Path, config: Config, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the node until cancelled; ``task_status.started(port)`` once listening."""
    wsmask.install()  # the node sends bulk data as a client: mask it in numpy
    key = load_or_create_key(home)
    limits = config.limits  # a ChannelLimits, with the fetch bounds besides
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
            await _run(home, config, key, store, limits, task_status)
        finally:
            store.close()


class PeerReports:
    """Pool to bus: a peer coming or going is an event. The node's own CLI
    connections (trust ``self``) are not peers and make none."""

    def __init__(self, publish: Publish, trust_of: Callable[[NodeId], TrustLevel]) -> None:
        self._publish = publish
        self._trust_of = trust_of

    def __call__(self, event: PeerEvent) -> None:
        if self._trust_of(event.peer) is not TrustLevel.SELF:
            self._publish(event)


class PeerLinks:
    """Bus to live trust: a peer coming or going starts or stops gossip and
    introductions with it (live trust decides whether it is a member)."""

    def __init__(self, live: LiveTrust) -> None:
        self._live = live

    def observe(self, event: Event) -> None:
        if isinstance(event, PeerConnected):
            self._live.peer_up(event.peer)
        elif isinstance(event, PeerDisconnected):
            self._live.peer_down(event.peer)


@dataclass(slots=True)
class _Parts:
    """The node's parts, built and wired; ``_serve`` runs them."""

    me: NodeId
    trust: TrustBook
    bus: EventBus
    counters: Counters
    store: AsyncStore
    pool: PeerPool
    gossip: GossipService
    intro_spreader: IntroSpreader
    finder: SourceFinder
    transfers: TransferManager
    directory: NodeDirectory
    downloads: Downloads


async def _run(
    home: Path,
    config: Config,
    key: NodeKey,
    store: BlobStore,
    limits: ChannelLimits,
    task_status: trio.TaskStatus[int],
) -> None:
    http_sock = open_http_socket(config.http)  # a taken port fails before anything runs
    registry = Registry()
    parts = _build(home, config, key, store, registry, limits)
    for spec in config.bootstrap:
        parts.pool.keep_connected(
            spec.address, NodeId.parse(spec.node_id) if spec.node_id else None
        )
    for entry in parts.trust.entries():  # the inviters this node joined through
        if entry.address is not None:
            parts.pool.keep_connected(parse_address(entry.address), entry.node)
    async with trio.open_nursery() as nursery:
        port = await _serve(nursery, parts, home, config, key, limits)
        if http_sock is not None:
            await _serve_http(nursery, parts, home, http_sock)
        task_status.started(port)


def _build(
    home: Path,
    config: Config,
    key: NodeKey,
    store: BlobStore,
    registry: Registry,
    limits: ChannelLimits,
) -> _Parts:
    """Every part, each given what it uses; the services registered on ``registry``."""
    me = key.node_id
    trust = open_book(home, me, config.trust, open_membership=config.open_membership)
    sources = SourceIndex(ttl_s=config.gossip.record_ttl_s)
    bus = EventBus()
    counters = Counters()
    bus.subscribe(counters.observe)
    astore = AsyncStore(store)

    def member(node: NodeId) -> bool:
        return node != me and trust.level(node) >= TrustLevel.MEMBER

    # The pool reports peers to the bus; gossip and introductions hear of them through
    # live trust, a bus subscriber, so no callback reaches an object not built yet.
    pool = PeerPool(
        key, registry, trust.level, limits=limits, on_event=PeerReports(bus.publish, trust.level)
    )
    gossip = GossipService(
        Gossip(me, config.gossip, random.Random(), admit=member, sign=key.sign),
        config.gossip,
        sources,
        pool,
        bus.publish,
        dialable=member,
    )
    finder = SourceFinder(me, pool, sources, addresses=gossip.addresses, member=member)
    transfers = TransferManager(
        astore, finder, bus.publish, gossip.publish,
        max_concurrent=config.limits.max_concurrent_fetches,
    )  # fmt: skip
    directory = NodeDirectory(
        me, store, pool, sources, trust_of=trust.level, gossip_peers=gossip.known_peers
    )
    intro_spreader, downloads = _register_services(
        home, config, key, registry, trust, member, bus, counters, astore, sources, pool,
        gossip, finder, transfers, directory,
    )  # fmt: skip
    return _Parts(
        me, trust, bus, counters, astore, pool, gossip, intro_spreader, finder, transfers,
        directory, downloads,
    )  # fmt: skip


def _register_services(
    home: Path,
    config: Config,
    key: NodeKey,
    registry: Registry,
    trust: TrustBook,
    member: Callable[[NodeId], bool],
    bus: EventBus,
    counters: Counters,
    astore: AsyncStore,
    sources: SourceIndex,
    pool: PeerPool,
    gossip: GossipService,
    finder: SourceFinder,
    transfers: TransferManager,
    directory: NodeDirectory,
) -> tuple[IntroSpreader, Downloads]:
    """What the node offers on the bus, each service given the parts it uses."""
    me, store = key.node_id, astore.sync
    FileService(
        astore,
        record_sources=lambda node, cids: sources.record(node, cids, time.time()),
        on_stored=lambda cid: gossip.publish([cid], []),
        on_served=counters.add_served,
        min_free_bytes=config.file.min_free_bytes,
    ).register(registry)
    gossip.register(registry)
    intro_spreader = IntroSpreader(pool, member)
    live_trust = LiveTrust(
        trust,
        pool,
        gossip,
        bus.publish,
        intros=open_intros(home, me, key.sign),
        spreader=intro_spreader,
        save_intros=IntroFile(home).save,
    )
    bus.subscribe(PeerLinks(live_trust).observe)
    TrustService(live_trust).register(registry)
    IntroService(live_trust).register(registry)
    InviteService(
        live_trust,
        open_invites(home),
        pool,
        lambda: reachable(directory.address) if directory.address else [],
    ).register(registry)
    NodeService(
        store, transfers=transfers, directory=directory, events=bus, announce=gossip.publish
    ).register(registry)
    downloads = Downloads(
        astore,
        RecordBook(store.data_dir),
        config.downloads,
        announce=gossip.publish,
        peers=PeerCache(finder.known, lambda cid: transfers.fetch(cid, None, False, _quiet)),
    )
    downloads.register(registry)
    return intro_spreader, downloads


async def _serve(
    nursery: trio.Nursery,
    parts: _Parts,
    home: Path,
    config: Config,
    key: NodeKey,
    limits: ChannelLimits,
) -> int:
    """Start every part in ``nursery``; the port the node listens on."""
    await nursery.start(parts.pool.serve)
    port: int = await nursery.start(
        functools.partial(
            serve_secure,
            config.node.listen,
            key,
            parts.pool.serve_inbound,
            limits=limits,
            control_path=control_socket(home),
        )
    )
    listen = Address(config.node.listen.host, port)
    parts.directory.listening(listen)
    data_dir = parts.store.sync.data_dir
    write_info(home, listen, parts.me, data_dir)
    log.info("node_started node=%s listen=%s data=%s", parts.me, listen, data_dir)
    await nursery.start(parts.gossip.serve)
    await nursery.start(parts.intro_spreader.serve)
    held = [i.cid for i in await parts.store.list_cids()]
    parts.gossip.publish(held, [], addresses=[str(listen)])
    nursery.start_soon(_gc_loop, parts.store, parts.bus.publish, parts.gossip.publish)
    heap = HeapTrim(functools.partial(trio.to_thread.run_sync, trim_heap))
    parts.bus.subscribe(heap.observe)
    nursery.start_soon(heap.serve)
    await nursery.start(parts.downloads.serve)
    return port


async def _serve_http(
    nursery: trio.Nursery, parts: _Parts, home: Path, http_sock: socket.socket
) -> None:
    gateway = NodeGateway(
        parts.store.sync,
        fetch=parts.transfers.fetch,
        announce=parts.gossip.publish,
        status=lambda: to_wire(parts.directory.status()),
        events=parts.bus,
        transfers=parts.transfers,
        holders=lambda cid: len(parts.directory.whohas(cid)),
        counters=parts.counters,
    )
    token = load_or_create_http_token(home)
    app = Gateway(gateway, token, mounts={"downloads": DownloadRoutes(parts.downloads)})
    http = await nursery.start(serve_http, app, http_sock)
    address = parts.directory.address
    assert address is not None, "the node listens before HTTP starts"
    parts.directory.listening(address, http=http)


async def _gc_loop(store: AsyncStore, publish: Publish, announce: Announce) -> None:
    """Evict past the store's limits (``BlobStore.bytes_to_free``); each evicted
    blob is an event and is withdrawn."""
    while True:
        await trio.sleep(GC_INTERVAL_S)
        report = await store.gc()
        if report.blobs_removed:
            log.info("gc removed=%d bytes_freed=%d", len(report.blobs_removed), report.bytes_freed)
            for cid in report.blobs_removed:
                publish(BlobEvicted(cid))
            announce([], list(report.blobs_removed))


def _quiet(progress: object) -> None:
    """A fetch's progress nobody follows (a download from peers reports at its end)."""


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


def trim_heap() -> None:
    """Give the heap's free pages back to the system (glibc ``malloc_trim``)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


class HeapTrim:
    """Returns what a departed peer made us buffer to the system.

    ``tune_malloc`` keeps up to 256 MiB of freed heap for reuse, so the bytes a peer
    made us hold (up to the bus's per-connection bound) stayed resident after it
    left: a window-filling member took a daemon from 126 MB to 1.5 GB and kept it
    there. Once a peer has gone, and its connection's tasks have had ``SETTLE_S`` to
    drop their buffers, the heap is trimmed in a worker thread; a burst of
    departures costs one trim.
    """

    SETTLE_S: Final = 2.0

    def __init__(self, trim: Callable[[], Awaitable[None]]) -> None:
        self._trim = trim  # trim_heap in a worker thread
        self._wanted = trio.Event()

    def observe(self, event: Event) -> None:
        if isinstance(event, PeerDisconnected):
            self._wanted.set()

    async def serve(self) -> None:
        while True:
            await self._wanted.wait()
            await trio.sleep(self.SETTLE_S)
            self._wanted = trio.Event()
            await self._trim()


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
