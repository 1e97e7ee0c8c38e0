"""YAML configuration -> frozen dataclasses, with validation (pure + file I/O).

This is the bottom layer: it imports nothing from the rest of hearthfile but the
error root, the shared bounds (limits.py) and addresses (address.py), and it is the
only module that imports ``yaml``. Everything above it receives typed, already-validated values,
each component only its own sub-config (``FileConfig``, ``LimitsConfig``, ``GossipConfig``...).

Where the settings come from, later wins:

1. built-in defaults: a node runs with no config file at all;
2. ``<home>/config.yaml``, or the file given with ``--config``;
3. ``hearthfile run`` flags (``--listen``, ``--peer``), via ``with_overrides``.

Trust granted while the node runs (``hearthfile trust``, invites) is kept by
hearthfile/trust/ in ``<home>/trust.json``: the operator's commented config.yaml
is never rewritten by a program. ``load_trust`` reads the ``trust.yaml`` an older
version kept, so trust/ can take its entries over.

Validation is strict because a typo in a config file should stop the node
before it runs with a setting the operator did not mean: unknown keys are
errors (with a did-you-mean hint), booleans must be YAML booleans, integers
must not be booleans, numbers must be finite. Every ``ConfigError`` names the
file, the key path and what was expected::

    config.yaml: file.gc_threshold: expected a number between 0 and 1, got 'high'
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

from hearthfile.address import Address, parse_address
from hearthfile.errors import HearthError
from hearthfile.limits import (
    MAX_DIGEST_ENTRIES,
    MAX_EXCHANGE_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_RECORD_CIDS,
    MIN_MESSAGE_BYTES,
    ChannelLimits,
    GiB,
    KiB,
    MiB,
    record_bytes,
)

if TYPE_CHECKING:
    import yaml
    from _typeshed import DataclassInstance

__all__ = [
    "CONFIG_FILENAME",
    "TRUST_FILENAME",
    "Address",
    "Config",
    "ConfigError",
    "FileConfig",
    "GossipConfig",
    "LimitsConfig",
    "NodeConfig",
    "PeerSpec",
    "load_config",
    "load_trust",
    "parse_address",
    "parse_size",
    "with_overrides",
]


T = TypeVar("T")
S = TypeVar("S", bound="DataclassInstance")


class ConfigError(HearthError):
    """A configuration value is missing, unknown or malformed."""


CONFIG_FILENAME: Final = "config.yaml"
TRUST_FILENAME: Final = "trust.yaml"
DEFAULT_PORT: Final = 7700
DEFAULT_HTTP_PORT: Final = 7780
DEFAULT_LISTEN: Final = Address("127.0.0.1", DEFAULT_PORT)
DEFAULT_HTTP_LISTEN: Final = Address("127.0.0.1", DEFAULT_HTTP_PORT)

#: Levels an operator can write down (hearthfile/trust/levels.py owns the order):
#: ``self`` is implied by the node's own key, ``stranger`` is the absence of an entry.
_Granted = Literal["member", "trusted"]


# Loose on purpose: identity.py owns the real NodeID parser (and checks that the
# text decodes to a key); here we only catch typos and pasted fragments early.
# "hf" + base32 of a 32-byte Ed25519 key = 52 characters, lowercase, unpadded.
_NODE_ID_RE: Final = re.compile(r"hf[a-z2-7]{52}")
_NODE_ID_EXPECTED: Final = "a node id ('hf' followed by 52 characters a-z, 2-7)"


# --- how a setting is read ---------------------------------------------------------

#: Reads one YAML value of a section's key; raises ``ConfigError`` naming both.
Parse = Callable[["_Section", str, object], Any]


def setting(default: T, parse: Parse) -> T:
    """A config field: its default and how a YAML value becomes it (checked). The
    one builder, ``_build``, reads every section through these."""
    value: T = field(default=default, metadata={"parse": parse})
    return value


def boolean() -> Parse:
    def parse(sec: _Section, key: str, value: object) -> bool:
        # YAML booleans only: the text "false" is truthy in Python, a silent trap.
        if not isinstance(value, bool):
            raise sec.error(key, "true or false", value)
        return value

    return parse


def integer(minimum: int = 1, maximum: int | None = None) -> Parse:
    def parse(sec: _Section, key: str, value: object) -> int:
        # bool is an int subclass; `fanout: yes` must not mean 1.
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise sec.error(key, f"an integer >= {minimum}", value)
        if maximum is not None and value > maximum:
            raise sec.error(key, f"an integer {minimum}..{maximum}", value)
        return value

    return parse


def number(expected: str, ok: Callable[[float], bool]) -> Parse:
    def parse(sec: _Section, key: str, value: object) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                result = float(value)
            except OverflowError:  # an int too large for a float
                result = math.inf
            if math.isfinite(result) and ok(result):
                return result
        raise sec.error(key, f"a number {expected}", value)

    return parse


def seconds() -> Parse:
    return number("of seconds > 0", lambda x: x > 0)


def size(minimum: int, maximum: tuple[int, str] | None = None) -> Parse:
    """Bytes as an integer or text like '512MiB'; ``maximum`` is (bytes, as written)."""

    def parse(sec: _Section, key: str, value: object) -> int:
        expected = f"a size in bytes >= {minimum} (an integer or text like '512MiB', '10GB')"
        if isinstance(value, str):
            try:
                value = parse_size(value)
            except ValueError:
                raise sec.error(key, expected, value) from None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise sec.error(key, expected, value)
        if maximum is not None and value > maximum[0]:
            raise sec.error(key, f"a size of at most {maximum[1]}", value)
        return value

    return parse


def optional(parse: Parse) -> Parse:
    """``parse``, or None for a YAML null (no limit)."""
    return lambda sec, key, value: None if value is None else parse(sec, key, value)


# --- the settings -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerSpec:
    """A peer to dial at start-up; with ``node_id`` set, any other key is refused."""

    address: Address
    node_id: str | None = None

    def __str__(self) -> str:
        return f"{self.node_id}@{self.address}" if self.node_id else str(self.address)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """``node:`` where this node listens and keeps its data."""

    #: Loopback by default: a fresh node is reachable by nobody until the
    #: operator chooses an interface.
    listen: Address = DEFAULT_LISTEN
    #: None only on a ``NodeConfig()`` built by hand; ``load_config`` always
    #: sets it (default ``<home>/data``).
    data_dir: Path | None = None


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """``http:`` the gateway (DESIGN.md section 10)."""

    #: None: ``off``. Loopback by default, like the node's own port.
    listen: Address | None = DEFAULT_HTTP_LISTEN
    #: False while ``listen`` is the default: then a port already taken (several
    #: nodes on one machine) means no gateway, not an error.
    explicit: bool = False


@dataclass(frozen=True, slots=True)
class FileConfig:
    """``file:`` the blob store's disk policy (blobs.store, services.file)."""

    #: GC starts when the store passes this fraction of ``max_store_bytes``...
    gc_threshold: float = setting(0.8, number("between 0 and 1", lambda x: 0 < x <= 1))
    #: ...and evicts down to ``gc_target`` of it; the gap keeps GC from running
    #: on every write once the store sits near the limit.
    gc_target: float = setting(0.7, number("between 0 and 1", lambda x: 0 <= x <= 1))
    #: GC evicts when free disk falls below this, and file.put refuses
    #: (capacity_exceeded) rather than leave less than this free.
    min_free_bytes: int = setting(1 * GiB, size(0))
    #: Whole chunks bypass the page cache (O_DIRECT) where the filesystem allows.
    direct_io: bool = setting(True, boolean())
    #: The store's size limit (None: none; then only ``min_free_bytes`` makes GC
    #: evict: the store is never measured against the whole disk's usage).
    max_store_bytes: int | None = setting(None, optional(size(1)))


_CHANNEL: Final = ChannelLimits()


@dataclass(frozen=True, slots=True)
class LimitsConfig(ChannelLimits):
    """``limits:`` bounds on connections (``ChannelLimits``, limits.py: the bus is
    handed this section as it is) and on fetches. The connection fields are
    ChannelLimits' own, with its defaults, declared again only to say how each is
    read."""

    max_message_bytes: int = setting(
        _CHANNEL.max_message_bytes, size(MIN_MESSAGE_BYTES, (MAX_MESSAGE_BYTES, "64MiB"))
    )
    handshake_timeout_s: float = setting(_CHANNEL.handshake_timeout_s, seconds())
    idle_timeout_s: float = setting(_CHANNEL.idle_timeout_s, seconds())
    max_unauthenticated: int = setting(_CHANNEL.max_unauthenticated, integer())
    max_connections_per_peer: int = setting(_CHANNEL.max_connections_per_peer, integer())
    receive_buffer_bytes: int = setting(_CHANNEL.receive_buffer_bytes, size(4 * KiB))
    #: Blob fetches running at once; each already fans out over many sources.
    max_concurrent_fetches: int = setting(16, integer())


@dataclass(frozen=True, slots=True)
class GossipConfig:
    """``gossip:`` dissemination timing and the bounds one origin can claim."""

    #: Seconds between push-pull rounds.
    interval_s: float = setting(5.0, seconds())
    #: Peers contacted per round: a few suffice for O(log n) spread and keep each
    #: round cheap.
    fanout: int = setting(3, integer())
    #: Records kept per origin: bounds the memory one noisy node can claim. At
    #: least 2: a snapshot may take half an origin's records, its deltas the rest.
    max_records_per_origin: int = setting(64, integer(2))
    #: CIDs in one record: bounds the work one record can cost a receiver.
    max_cids_per_record: int = setting(1024, integer(1, MAX_RECORD_CIDS))
    #: A node whose newest record is older than this ages out of the SourceIndex.
    record_ttl_s: float = setting(600.0, seconds())
    #: Records stamped further than this from our clock (either way) are dropped.
    max_clock_skew_s: float = setting(300.0, number("of seconds >= 0", lambda x: x >= 0))
    #: Origins whose records a node keeps: with open membership anyone can mint
    #: identities, so the table needs a bound of its own.
    max_origins: int = setting(4096, integer(1, MAX_DIGEST_ENTRIES))
    #: Largest batch of records (and wants) in one gossip message, and the unit of
    #: each peer's byte budget: at most twice this per round in each direction.
    max_exchange_bytes: int = setting(192 * KiB, size(64 * KiB, (MAX_EXCHANGE_BYTES, "256KiB")))
    #: New records accepted per origin per round, sustained (bursts of up to
    #: max_records_per_origin): stops a member flooding the network.
    origin_records_per_round: int = setting(4, integer())


@dataclass(frozen=True, slots=True)
class DownloadsConfig:
    """``downloads:`` the URL download cache (DESIGN.md section 12)."""

    #: Downloads running at once; the rest wait as Pending, oldest first.
    max_active: int = setting(3, integer())
    #: A file larger than this (announced or received) fails instead of filling the disk.
    max_bytes: int = setting(100 * GiB, size(0))
    #: Dialing the origin (DNS, TCP, TLS) gives up after this long.
    connect_timeout_s: float = setting(15.0, seconds())
    #: An origin silent this long mid-body is asked again for the rest.
    idle_timeout_s: float = setting(30.0, seconds())
    #: Redirects followed per request: enough for mirrors, not for a loop.
    max_redirects: int = setting(5, integer(0))
    #: Times a broken body is asked again for the rest before the download fails.
    max_retries: int = setting(5, integer(0))
    #: Bytes received are made durable at least this often (size or time):
    #: a kill loses at most this tail.
    flush_bytes: int = setting(64 * MiB, size(256 * KiB))
    flush_interval_s: float = setting(2.0, seconds())


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration; each component is handed only its own section."""

    node: NodeConfig = field(default_factory=NodeConfig)
    bootstrap: tuple[PeerSpec, ...] = ()
    #: (NodeID text, level) pairs sorted by NodeID; hearthfile/trust/ merges them
    #: with the grants made while running (trust.json wins).
    trust: tuple[tuple[str, _Granted], ...] = ()
    #: Treat every authenticated stranger as a member. Off: a node serves only
    #: the peers its operator named.
    open_membership: bool = False
    #: Whose signed introductions this node follows (DESIGN.md section 11):
    #: ``trusted`` its trusted peers and the node it joined through, ``joined`` only
    #: the latter, ``none`` nobody's (every peer by hand or by invite).
    introducers: str = "trusted"
    file: FileConfig = field(default_factory=FileConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    gossip: GossipConfig = field(default_factory=GossipConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    downloads: DownloadsConfig = field(default_factory=DownloadsConfig)
    #: The file the settings came from; None when running on defaults.
    source_path: Path | None = None


# --- public API -------------------------------------------------------------


def load_config(home: Path, path: Path | None = None) -> Config:
    """Load and validate the config.

    ``path`` None means ``<home>/config.yaml`` if it exists, else the defaults.
    An explicit ``path`` that cannot be read is an error. Raises ``ConfigError``.
    """
    if path is None:
        path = home / CONFIG_FILENAME
        if not path.exists():
            return Config(node=NodeConfig(data_dir=home / "data"))
    data = _read_yaml(path)
    return _build_config(_Section(str(path), "", _top_mapping(data, str(path))), home, path)


def with_overrides(
    config: Config,
    listen: Address | str | None = None,
    peers: Sequence[PeerSpec | Address | str] | None = None,
    http: str | None = None,
) -> Config:
    """Apply ``hearthfile run`` flags, which override the file.

    ``peers`` replaces the file's bootstrap list when it is non-empty; None or
    an empty list (no ``--peer`` flag given) keeps it.
    """
    node = config.node
    if listen is not None:
        node = replace(node, listen=_flag_address("--listen", listen))
    bootstrap = config.bootstrap
    if peers:
        bootstrap = tuple(
            p if isinstance(p, PeerSpec) else PeerSpec(_flag_address("--peer", p, dial=True))
            for p in peers
        )
    if http is not None:
        flags = _Section("command line", "", {})
        config = replace(config, http=_http_listen(flags, "--http", http))
    return replace(config, node=node, bootstrap=bootstrap)


def load_trust(home: Path) -> dict[str, _Granted]:
    """The ``<home>/trust.yaml`` an older version kept (NodeID -> level); {} if none.
    hearthfile/trust/storage.py takes it over into trust.json."""
    path = home / TRUST_FILENAME
    if not path.exists():
        return {}
    data = _read_yaml(path)
    if data is None:
        return {}
    return dict(_parse_trust(data, str(path), ""))


def parse_size(text: str) -> int:
    """Parse a byte count: ``"1GiB"``, ``"512 MiB"``, ``"10GB"``, ``"4096"``.

    Binary units (KiB, MiB, GiB, TiB) are powers of 1024, decimal ones (KB,
    MB, GB, TB) powers of 1000, as disks are labelled. Case is ignored. Raises
    ValueError.
    """
    match = _SIZE_RE.fullmatch(text.strip())
    if match is None or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"expected a size like '512MiB' or '10GB', got {text!r}")
    value = Decimal(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    if value != value.to_integral_value():
        raise ValueError(f"{text!r} is not a whole number of bytes")
    return int(value)


_SIZE_RE: Final = re.compile(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)")
_SIZE_UNITS: Final[Mapping[str, int]] = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": KiB,
    "mib": MiB,
    "gib": GiB,
    "tib": 1024 * GiB,
}

# --- reading files ----------------------------------------------------------


def _read_yaml(path: Path) -> object:
    import yaml  # here, not at the top: commands that read no config start faster

    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    try:
        # Compose first (no objects built) to catch duplicate keys, which
        # safe_load silently resolves by keeping the last one: a second
        # `file:` section would quietly discard the first.
        _check_duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader))
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = exc.problem or exc.context or "malformed"
        lines = text.splitlines()
        if mark and mark.line < len(lines) and _BARE_IPV6_RE.search(lines[mark.line]):
            # `[` opens a YAML list, so an unquoted "[::1]:7700" is a syntax error.
            problem += ' (quote bracketed IPv6 addresses: "[::1]:7700")'
        raise ConfigError(f"{path}: {where}invalid YAML: {problem}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc


def _check_duplicate_keys(root: yaml.Node | None) -> None:
    import yaml

    seen_nodes: set[int] = set()  # anchors can make the node graph cyclic
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: set[tuple[str, str]] = set()
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                    key = (key_node.tag, key_node.value)
                    if key in keys:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                        )
                    keys.add(key)
                stack += [key_node, value_node]
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value


_MERGE_TAG: Final = "tag:yaml.org,2002:merge"
_BARE_IPV6_RE: Final = re.compile(r"""(^|[\s,{]|:\s)\[[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\]""")


# --- validation -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Section:
    """One YAML mapping plus where it sits, so errors can name file and key path."""

    source: str
    prefix: str
    data: Mapping[str, object]

    def path(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def error(self, key: str, expected: str, got: object) -> ConfigError:
        return ConfigError(
            f"{self.source}: {self.path(key)}: expected {expected}, got {_show(got)}"
        )

    def sub(self, key: str) -> _Section:
        return _Section(self.source, self.path(key), _mapping(self.data.get(key), self, key))


def _top_mapping(data: object, source: str) -> Mapping[str, object]:
    if data is None:  # an empty file, or only comments: all defaults
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of sections at the top, got {_show(data)}")
    return _string_keys(data, source, "")


def _mapping(value: object, parent: _Section, key: str) -> Mapping[str, object]:
    if value is None:  # a section whose keys are all commented out
        return {}
    if not isinstance(value, Mapping):
        raise parent.error(key, "a mapping", value)
    return _string_keys(value, parent.source, parent.path(key))


def _string_keys(data: Mapping[object, object], source: str, prefix: str) -> dict[str, object]:
    for key in data:
        if not isinstance(key, str):
            where = f"{prefix}: " if prefix else ""
            raise ConfigError(f"{source}: {where}keys must be text, got {_show(key)}")
    return {str(k): v for k, v in data.items()}


def _check_keys(
    sec: _Section, allowed: Iterable[str], elsewhere: Mapping[str, str] | None = None
) -> None:
    known = list(allowed)
    for key in sec.data:
        if key in known:
            continue
        close = difflib.get_close_matches(key, known, n=1)
        if elsewhere and key in elsewhere:
            hint = f" (did you mean {elsewhere[key]!r}?)"
        elif close:
            hint = f" (did you mean {close[0]!r}?)"
        else:
            hint = f"; expected one of: {', '.join(known)}"
        raise ConfigError(f"{sec.source}: {sec.path(key)}: unknown key{hint}")


def _build_config(top: _Section, home: Path, path: Path) -> Config:
    sections = {
        "node": NodeConfig,
        "file": FileConfig,
        "limits": LimitsConfig,
        "gossip": GossipConfig,
    }
    # `listen:` at the top level is a likely slip for `node.listen:`; say so.
    elsewhere = {k: f"{s}.{k}" for s, cls in sections.items() for k in _names(cls)}
    _check_keys(top, _names(Config), elsewhere)
    return Config(
        node=_node(top.sub("node"), home, path),
        bootstrap=_bootstrap(top),
        trust=_parse_trust(top.data.get("trust"), top.source, "trust"),
        open_membership=boolean()(top, "open_membership", top.data.get("open_membership", False)),
        introducers=_introducers(top),
        file=_build(top.sub("file"), FileConfig),
        limits=_build(top.sub("limits"), LimitsConfig),
        gossip=_build(top.sub("gossip"), GossipConfig),
        http=_http(top.sub("http")),
        downloads=_build(top.sub("downloads"), DownloadsConfig),
        source_path=path.absolute(),
    )


def _introducers(top: _Section) -> str:
    value = top.data.get("introducers", "trusted")
    if value not in ("trusted", "joined", "none"):
        raise top.error("introducers", "one of trusted, joined, none", value)
    return str(value)


def _build(sec: _Section, cls: type[S]) -> S:
    """A section from its mapping: every key present is read by its field's parser,
    the rest keep their defaults; then the checks that span several fields."""
    _check_keys(sec, _names(cls))
    values = {
        f.name: f.metadata["parse"](sec, f.name, sec.data[f.name])
        for f in fields(cls)
        if f.name in sec.data
    }
    built = cls(**values)
    for check in _CHECKS.get(cls, ()):
        check(sec, built)
    return built


def _check_gc_levels(sec: _Section, c: FileConfig) -> None:
    if c.gc_target >= c.gc_threshold:
        # GC evicts from the threshold down to the target; the other way round
        # it would have nothing to do, or run on every write.
        expected = f"a number below {sec.path('gc_threshold')} ({c.gc_threshold})"
        raise sec.error("gc_target", expected, c.gc_target)


def _check_record_ttl(sec: _Section, c: GossipConfig) -> None:
    if c.record_ttl_s <= c.interval_s:
        # Otherwise every node would age out between two rounds of gossip.
        expected = f"more than {sec.path('interval_s')} ({c.interval_s})"
        raise sec.error("record_ttl_s", expected, c.record_ttl_s)


def _check_exchange_fits_a_record(sec: _Section, c: GossipConfig) -> None:
    if c.max_exchange_bytes < record_bytes(c.max_cids_per_record):
        # A record that can never be sent would stall its origin for good.
        raise sec.error(
            "max_exchange_bytes",
            f"at least {record_bytes(c.max_cids_per_record)} to carry a record of "
            f"{sec.path('max_cids_per_record')} ({c.max_cids_per_record}) CIDs",
            c.max_exchange_bytes,
        )


#: The checks of each section that span several of its fields.
_CHECKS: Final[Mapping[type, tuple[Callable[[_Section, Any], None], ...]]] = {
    FileConfig: (_check_gc_levels,),
    GossipConfig: (_check_record_ttl, _check_exchange_fits_a_record),
}


def _names(cls: type[DataclassInstance]) -> tuple[str, ...]:
    """The keys a section accepts: its dataclass's fields, so the two cannot drift."""
    return tuple(f.name for f in fields(cls) if f.name != "source_path")


def _node(sec: _Section, home: Path, path: Path) -> NodeConfig:
    _check_keys(sec, _names(NodeConfig))
    listen = NodeConfig().listen
    if "listen" in sec.data:
        listen = _address(sec, "listen", sec.data["listen"], dial=False)
    data_dir = home / "data"
    raw = sec.data.get("data_dir")
    if raw is not None:
        if not isinstance(raw, str) or not raw.strip():
            raise sec.error("data_dir", "a directory path", raw)
        # Relative to the config file, not the working directory, so the same
        # file means the same place however the daemon was started.
        data_dir = path.absolute().parent / Path(raw).expanduser()
    return NodeConfig(listen=listen, data_dir=data_dir)


def _http(sec: _Section) -> HttpConfig:
    _check_keys(sec, ("listen",))
    if "listen" not in sec.data:
        return HttpConfig()
    return _http_listen(sec, "listen", sec.data["listen"])


def _http_listen(sec: _Section, key: str, value: object) -> HttpConfig:
    """``host:port`` or ``off`` (YAML reads a bare off as False)."""
    if value is False or value == "off":
        return HttpConfig(listen=None, explicit=True)
    return HttpConfig(listen=_address(sec, key, value, dial=False), explicit=True)


def _address(sec: _Section, key: str, value: object, *, dial: bool) -> Address:
    if isinstance(value, list):  # `listen: [::1]` reads as a list holding "::1"
        raise sec.error(key, 'host:port (quote IPv6 addresses: "[::1]:7700")', value)
    if not isinstance(value, str):
        raise sec.error(key, "host:port", value)
    try:
        address = parse_address(value)
    except ValueError as exc:
        raise ConfigError(f"{sec.source}: {sec.path(key)}: {exc}") from exc
    if dial and address.port == 0:  # port 0 means "any" when listening, nothing when dialling
        raise sec.error(key, "host:port with a port 1-65535", value)
    return address


def _flag_address(flag: str, value: Address | str, *, dial: bool = False) -> Address:
    if isinstance(value, Address):
        return value
    return _address(_Section("command line", "", {}), flag, value, dial=dial)


def _bootstrap(top: _Section) -> tuple[PeerSpec, ...]:
    raw = top.data.get("bootstrap")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise top.error("bootstrap", "a list of host:port or {address, node_id}", raw)
    peers = []
    for i, item in enumerate(raw):
        key = f"bootstrap[{i}]"
        if isinstance(item, str):
            peers.append(PeerSpec(_address(top, key, item, dial=True)))
            continue
        if not isinstance(item, Mapping):
            raise top.error(key, "host:port or a mapping {address, node_id}", item)
        sec = _Section(top.source, key, _string_keys(item, top.source, key))
        _check_keys(sec, _names(PeerSpec))
        if "address" not in sec.data:
            raise ConfigError(f"{top.source}: {key}.address: required (host:port)")
        node_id = sec.data.get("node_id")
        if node_id is not None and not (
            isinstance(node_id, str) and _NODE_ID_RE.fullmatch(node_id)
        ):
            raise sec.error("node_id", _NODE_ID_EXPECTED, node_id)
        address = _address(sec, "address", sec.data["address"], dial=True)
        peers.append(PeerSpec(address, node_id))
    return tuple(peers)


def _parse_trust(raw: object, source: str, prefix: str) -> tuple[tuple[str, _Granted], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        where = f"{prefix}: " if prefix else ""
        raise ConfigError(
            f"{source}: {where}expected a mapping of node id -> member|trusted, got {_show(raw)}"
        )
    sec = _Section(source, prefix, _string_keys(raw, source, prefix))
    pairs: list[tuple[str, _Granted]] = []
    for node_id, value in sec.data.items():
        if not _NODE_ID_RE.fullmatch(node_id):
            raise ConfigError(
                f"{source}: {sec.path(node_id)}: expected {_NODE_ID_EXPECTED} as the key"
            )
        level = _as_level(value)
        if level is None:
            raise sec.error(node_id, "'member' or 'trusted'", value)
        pairs.append((node_id, level))
    return tuple(sorted(pairs))


def _as_level(value: object) -> _Granted | None:
    if value == "member":
        return "member"
    if value == "trusted":
        return "trusted"
    return None


def _show(value: object) -> str:
    """A YAML value as the operator wrote it, short enough for one error line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
