"""Config loading and validation (hearthfile/config.py); files only under tmp_path."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hearthfile.config import (
    Address,
    Config,
    ConfigError,
    FileConfig,
    GossipConfig,
    LimitsConfig,
    NodeConfig,
    PeerSpec,
    load_config,
    load_trust,
    parse_size,
    with_overrides,
)
from hearthfile.limits import ChannelLimits

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "config"
EXAMPLES = sorted(EXAMPLES_DIR.rglob("*.yaml"))

ALICE = "hf" + "a" * 52
BOB = "hf" + "b2" * 26


def write_config(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def config_error(home: Path, text: str) -> str:
    write_config(home, text)
    with pytest.raises(ConfigError) as info:
        load_config(home)
    return str(info.value)


# --- defaults and examples ---------------------------------------------------


def test_no_file_means_defaults(tmp_path: Path) -> None:
    config = load_config(tmp_path)
    assert config.node == NodeConfig(Address("127.0.0.1", 7700), tmp_path / "data")
    assert config.bootstrap == ()
    assert config.trust == ()
    assert config.open_membership is False
    assert config.file == FileConfig(0.8, 0.7, 1024**3)
    assert config.limits.max_message_bytes == 327680
    assert config.limits.receive_buffer_bytes == 1024 * 1024
    assert config.gossip == GossipConfig()
    assert config.source_path is None


@pytest.mark.parametrize("text", ["", "# only comments\n", "file:\n  # all commented\n"])
def test_empty_file_or_section_means_defaults(tmp_path: Path, text: str) -> None:
    config = load_config(tmp_path, write_config(tmp_path, text))
    assert config.file == FileConfig()
    assert config.source_path == tmp_path / "config.yaml"


def test_explicit_path_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read"):
        load_config(tmp_path, tmp_path / "missing.yaml")


def test_there_are_examples() -> None:
    names = {p.relative_to(EXAMPLES_DIR).as_posix() for p in EXAMPLES}
    assert {"single-node.yaml", "trusts-admin.yaml", "three-node-loopback/node1.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.relative_to(EXAMPLES_DIR).as_posix())
def test_every_example_validates(tmp_path: Path, path: Path) -> None:
    config = load_config(tmp_path, path)
    assert config.source_path == path


def test_single_node_example_spells_out_the_defaults(tmp_path: Path) -> None:
    config = load_config(tmp_path, EXAMPLES_DIR / "single-node.yaml")
    assert config == dataclasses.replace(load_config(tmp_path), source_path=config.source_path)


def test_three_node_loopback_examples(tmp_path: Path) -> None:
    ports = {7701, 7702, 7703}
    for n, port in enumerate(sorted(ports), start=1):
        config = load_config(tmp_path, EXAMPLES_DIR / "three-node-loopback" / f"node{n}.yaml")
        assert config.node.listen == Address("127.0.0.1", port)
        assert {p.address.port for p in config.bootstrap} == ports - {port}


def test_trusts_admin_example(tmp_path: Path) -> None:
    config = load_config(tmp_path, EXAMPLES_DIR / "trusts-admin.yaml")
    (admin, level), *others = config.trust
    assert level == "trusted" and others == []
    assert config.open_membership is False
    assert config.bootstrap[0].node_id == admin


def test_limits_section_is_the_bus_connection_limits() -> None:
    """One type, not two kept equal: the bus is handed the limits section as it is."""
    assert isinstance(LimitsConfig(), ChannelLimits)
    assert LimitsConfig().max_message_bytes == ChannelLimits().max_message_bytes


# --- a full file ---------------------------------------------------------------


def test_full_file(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        f"""
node:
  listen: 0.0.0.0:7000
  data_dir: /srv/hearth
bootstrap:
  - 10.0.0.2:7700
  - address: "[fe80::1]:7701"
    node_id: {ALICE}
  - {{address: peer.lan:7702, node_id: null}}
trust:
  {BOB}: trusted
  {ALICE}: member
open_membership: yes
file: {{gc_threshold: 0.9, gc_target: 0.5, min_free_bytes: 512MiB, direct_io: false}}
limits: {{max_message_bytes: 1048576, idle_timeout_s: 2.5, max_concurrent_fetches: 2}}
gossip: {{interval_s: 1, fanout: 5, record_ttl_s: 30, max_clock_skew_s: 0, max_origins: 100,
  max_exchange_bytes: 128KiB, origin_records_per_round: 2}}
""",
    )
    config = load_config(tmp_path, path)
    assert config.node == NodeConfig(Address("0.0.0.0", 7000), Path("/srv/hearth"))
    assert config.bootstrap == (
        PeerSpec(Address("10.0.0.2", 7700)),
        PeerSpec(Address("fe80::1", 7701), ALICE),
        PeerSpec(Address("peer.lan", 7702)),
    )
    assert config.trust == ((ALICE, "member"), (BOB, "trusted"))
    assert config.open_membership is True
    assert config.file == FileConfig(0.9, 0.5, 512 * 1024**2, direct_io=False)
    assert config.limits == LimitsConfig(
        max_message_bytes=1 << 20, idle_timeout_s=2.5, max_concurrent_fetches=2
    )
    assert config.gossip == GossipConfig(
        interval_s=1.0,
        fanout=5,
        record_ttl_s=30.0,
        max_clock_skew_s=0.0,
        max_origins=100,
        max_exchange_bytes=128 * 1024,
        origin_records_per_round=2,
    )
    assert isinstance(config.gossip.interval_s, float)


# --- data_dir resolution -----------------------------------------------------------


def test_relative_data_dir_is_relative_to_the_config_file(tmp_path: Path) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    path = conf_dir / "node.yaml"
    path.write_text("node:\n  data_dir: store/blobs\n")
    config = load_config(tmp_path / "home", path)
    assert config.node.data_dir == conf_dir / "store" / "blobs"


def test_relative_config_path_still_gives_absolute_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "node.yaml").write_text("node: {data_dir: d}\n")
    monkeypatch.chdir(tmp_path)
    config = load_config(tmp_path / "home", Path("node.yaml"))
    assert config.node.data_dir == tmp_path / "d"
    assert config.source_path == tmp_path / "node.yaml"


def test_data_dir_default_is_under_home_even_with_explicit_config(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.yaml"
    path.write_text("open_membership: false\n")
    assert load_config(tmp_path / "home", path).node.data_dir == tmp_path / "home" / "data"


def test_data_dir_expands_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    path = write_config(tmp_path, "node: {data_dir: ~/hf}\n")
    assert load_config(tmp_path, path).node.data_dir == tmp_path / "user" / "hf"


# --- errors: every message names file, key path and what was expected --------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gosip: {}\n", r"config\.yaml: gosip: unknown key \(did you mean 'gossip'\?\)"),
        ("listen: 1.2.3.4:5\n", r"listen: unknown key \(did you mean 'node\.listen'\?\)"),
        ("colour: red\n", r"colour: unknown key; expected one of: node, bootstrap, trust"),
        (
            "file:\n  gc_treshold: 0.5\n",
            r"config\.yaml: file\.gc_treshold: unknown key \(did you mean 'gc_threshold'\?\)",
        ),
        ("gossip: {fan_out: 2}\n", r"gossip\.fan_out: unknown key \(did you mean 'fanout'\?\)"),
        ("bootstrap:\n  - {adress: a:1}\n", r"bootstrap\[0\]\.adress: .*did you mean 'address'"),
    ],
)
def test_unknown_keys(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(tmp_path, write_config(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "file: {gc_threshold: high}\n",
            "config.yaml: file.gc_threshold: expected a number between 0 and 1, got 'high'",
        ),
        ("file: {gc_threshold: 1.5}\n", "file.gc_threshold: expected a number between 0 and 1"),
        ("file: {gc_threshold: .nan}\n", "file.gc_threshold: expected a number"),
        ("file: {gc_threshold: true}\n", "file.gc_threshold: expected a number"),
        ("open_membership: 'true'\n", "open_membership: expected true or false, got 'true'"),
        ("open_membership: 1\n", "open_membership: expected true or false, got 1"),
        ("gossip: {fanout: yes}\n", "gossip.fanout: expected an integer >= 1, got true"),
        ("gossip: {fanout: 2.0}\n", "gossip.fanout: expected an integer >= 1, got 2.0"),
        ("gossip: {fanout: 0}\n", "gossip.fanout: expected an integer >= 1, got 0"),
        ("limits: {idle_timeout_s: .inf}\n", "limits.idle_timeout_s: expected a number of sec"),
        ("limits: {idle_timeout_s: 0}\n", "limits.idle_timeout_s: expected a number of seconds"),
        ("limits: {handshake_timeout_s: 1" + "0" * 400 + "}\n", "handshake_timeout_s: expected"),
        ("limits: {max_message_bytes: 1000}\n", "limits.max_message_bytes: expected a size"),
        ("limits: {max_message_bytes: 1GiB}\n", "max_message_bytes: expected a size of at most"),
        ("file: {min_free_bytes: lots}\n", "file.min_free_bytes: expected a size in bytes"),
        ("file: {min_free_bytes: -1}\n", "file.min_free_bytes: expected a size in bytes >= 0"),
        ("file: {direct_io: maybe}\n", "file.direct_io: expected true or false, got 'maybe'"),
        ("file: [1, 2]\n", "config.yaml: file: expected a mapping, got a list"),
        ("- node\n", "config.yaml: expected a mapping of sections at the top, got a list"),
        ("bootstrap: 1.2.3.4:5\n", "bootstrap: expected a list of host:port"),
        ("bootstrap: [7700]\n", "bootstrap[0]: expected host:port or a mapping"),
        ("node: {data_dir: 5}\n", "node.data_dir: expected a directory path, got 5"),
        ("trust: [a]\n", "config.yaml: trust: expected a mapping of node id"),
        ("1: x\n", "config.yaml: keys must be text, got 1"),
    ],
)
def test_wrong_types_and_values(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in config_error(tmp_path, text)


def test_gc_target_must_be_below_threshold(tmp_path: Path) -> None:
    message = config_error(tmp_path, "file: {gc_threshold: 0.6, gc_target: 0.6}\n")
    assert message.endswith(
        "config.yaml: file.gc_target: expected a number below file.gc_threshold (0.6), got 0.6"
    )
    # The default target (0.7) is above a lowered threshold: also an error.
    assert "file.gc_target" in config_error(tmp_path, "file: {gc_threshold: 0.5}\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gossip: {max_records_per_origin: 1}\n", "max_records_per_origin: expected an int"),
        ("gossip: {max_cids_per_record: 8193}\n", "max_cids_per_record: expected an integer 1.."),
        ("gossip: {max_origins: 4097}\n", "gossip.max_origins: expected an integer 1..4096"),
        ("gossip: {max_origins: 0}\n", "gossip.max_origins: expected an integer >= 1"),
        ("gossip: {max_exchange_bytes: 1KiB}\n", "max_exchange_bytes: expected a size in bytes"),
        ("gossip: {max_exchange_bytes: 1MiB}\n", "max_exchange_bytes: expected a size of at most"),
        (
            "gossip: {max_cids_per_record: 4096, max_exchange_bytes: 64KiB}\n",
            "gossip.max_exchange_bytes: expected at least 141568 to carry a record of "
            "gossip.max_cids_per_record (4096) CIDs, got 65536",
        ),
        ("gossip: {origin_records_per_round: 0}\n", "origin_records_per_round: expected an int"),
    ],
)
def test_gossip_limits(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in config_error(tmp_path, text)


def test_record_ttl_must_exceed_interval(tmp_path: Path) -> None:
    message = config_error(tmp_path, "gossip: {interval_s: 10, record_ttl_s: 10}\n")
    assert "gossip.record_ttl_s: expected more than gossip.interval_s (10.0), got 10.0" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("node: {listen: 127.0.0.1:70000}\n", "node.listen: port must be a number 0-65535"),
        ("node: {listen: localhost}\n", "node.listen: expected host:port, got 'localhost'"),
        ("node: {listen: ':7700'}\n", "node.listen: expected host:port"),
        ("node: {listen: 7700}\n", "node.listen: expected host:port, got 7700"),
        ("bootstrap: ['a:b']\n", "bootstrap[0]: port must be a number 0-65535 in 'a:b'"),
        ("bootstrap: ['peer:0']\n", "bootstrap[0]: expected host:port with a port 1-65535"),
        ("bootstrap: [{node_id: null}]\n", "bootstrap[0].address: required"),
    ],
)
def test_bad_addresses(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in config_error(tmp_path, text)


def test_listen_port_zero_is_allowed(tmp_path: Path) -> None:
    path = write_config(tmp_path, "node: {listen: 127.0.0.1:0}\n")
    assert load_config(tmp_path, path).node.listen.port == 0


@pytest.mark.parametrize(
    "node_id",
    ["hfabc", "HF" + "a" * 52, "hf" + "A" * 52, "hf" + "1" * 52, "hf" + "a" * 53, "xy" + "a" * 52],
)
def test_bad_node_ids(tmp_path: Path, node_id: str) -> None:
    message = config_error(tmp_path, f"trust:\n  {node_id}: member\n")
    assert f"config.yaml: trust.{node_id}: expected a node id ('hf' followed by 52" in message
    message = config_error(tmp_path, f"bootstrap:\n  - {{address: a:1, node_id: {node_id}}}\n")
    assert "config.yaml: bootstrap[0].node_id: expected a node id" in message


@pytest.mark.parametrize("level", ["admin", "self", "stranger", "Trusted", "true", "[member]"])
def test_bad_trust_levels(tmp_path: Path, level: str) -> None:
    message = config_error(tmp_path, f"trust:\n  {ALICE}: {level}\n")
    assert f"config.yaml: trust.{ALICE}: expected 'member' or 'trusted', got " in message


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    message = config_error(tmp_path, "node:\n  listen: 127.0.0.1:7700\n bad: [\n")
    assert message.startswith(f"{tmp_path / 'config.yaml'}: line 3, column")
    assert "invalid YAML" in message


@pytest.mark.parametrize(
    "text",
    [
        "node: {listen: [::1]:7700}\n",
        "node:\n  listen: [fe80::1]:7700\n",
        "bootstrap:\n  - [::1]:7701\n",
        "node: {listen: [::1]}\n",
        "node:\n  listen: [fe80::1]\n",
    ],
)
def test_unquoted_ipv6_says_to_quote_it(tmp_path: Path, text: str) -> None:
    # `[` starts a YAML list: a syntax error, or a list, either way a puzzle
    # unless the message says what to write.
    assert "quote" in config_error(tmp_path, text)


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    message = config_error(tmp_path, "file: {}\nnode: {}\nfile:\n  gc_threshold: 0.9\n")
    assert "config.yaml: line 3, column 1: invalid YAML: duplicate key 'file'" in message


def test_yaml_merge_keys_still_work(tmp_path: Path) -> None:
    text = "base: &g {interval_s: 2.0, fanout: 4}\n"
    # An anchor in an unknown key is still an unknown key...
    assert "base: unknown key" in config_error(tmp_path, text)
    # ...but `<<` overridden by a later key is not a duplicate.
    path = write_config(tmp_path, "gossip:\n  <<: {interval_s: 2.0, fanout: 4}\n  fanout: 6\n")
    assert load_config(tmp_path, path).gossip == GossipConfig(interval_s=2.0, fanout=6)


def test_non_utf8_file(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_bytes(b"node: {listen: \xff}\n")
    with pytest.raises(ConfigError, match=r"config\.yaml: not UTF-8"):
        load_config(tmp_path)


# --- sizes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("4096", 4096),
        ("1GiB", 1024**3),
        ("512MiB", 512 * 1024**2),
        ("512 MiB", 512 * 1024**2),
        ("10GB", 10 * 1000**3),
        ("1.5KiB", 1536),
        ("2kb", 2000),
        ("1TiB", 1024**4),
        ("7B", 7),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "GiB", "1.5B", "-1KiB", "1 XB", "1e9", "1,000"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_size_keys_accept_ints_and_text(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, "file: {min_free_bytes: 10GB}\nlimits: {receive_buffer_bytes: 65536}"
    )
    config = load_config(tmp_path, path)
    assert config.file.min_free_bytes == 10 * 1000**3
    assert config.limits.receive_buffer_bytes == 65536


# --- command-line overrides ---------------------------------------------------------


def test_overrides_replace_file_values(tmp_path: Path) -> None:
    path = write_config(tmp_path, "node: {listen: 127.0.0.1:7001}\nbootstrap: [a:1, b:2]\n")
    config = load_config(tmp_path, path)
    new = with_overrides(config, listen="0.0.0.0:9000", peers=["c:3", Address("d", 4)])
    assert new.node.listen == Address("0.0.0.0", 9000)
    assert new.node.data_dir == config.node.data_dir
    assert new.bootstrap == (PeerSpec(Address("c", 3)), PeerSpec(Address("d", 4)))
    assert new.file == config.file and new.source_path == config.source_path


@pytest.mark.parametrize("peers", [None, []])
def test_no_flags_keep_the_file(tmp_path: Path, peers: list[str] | None) -> None:
    config = load_config(tmp_path, write_config(tmp_path, "bootstrap: [a:1]\n"))
    assert with_overrides(config, peers=peers) == config


def test_override_accepts_peer_specs() -> None:
    spec = PeerSpec(Address("x", 1), ALICE)
    assert with_overrides(Config(), peers=[spec]).bootstrap == (spec,)


@pytest.mark.parametrize(
    ("listen", "peers", "expected"),
    [
        ("nope", None, "command line: --listen: expected host:port, got 'nope'"),
        ("h:99999", None, "command line: --listen: port must be a number 0-65535"),
        (None, ["a:1", "b"], "command line: --peer: expected host:port, got 'b'"),
        (None, ["a:0"], "command line: --peer: expected host:port with a port 1-65535"),
    ],
)
def test_bad_override(listen: str | None, peers: list[str] | None, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        with_overrides(Config(), listen=listen, peers=peers)
    assert str(info.value).startswith(expected)


# --- trust.yaml ----------------------------------------------------------------------


def test_bad_trust_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "trust.yaml").write_text(f"{ALICE}: admin\n")
    with pytest.raises(ConfigError) as info:
        load_trust(tmp_path)
    assert str(info.value) == (
        f"{tmp_path / 'trust.yaml'}: {ALICE}: expected 'member' or 'trusted', got 'admin'"
    )
    (tmp_path / "trust.yaml").write_text("- nope\n")
    with pytest.raises(ConfigError, match=r"trust\.yaml: expected a mapping of node id"):
        load_trust(tmp_path)


def test_empty_trust_file(tmp_path: Path) -> None:
    (tmp_path / "trust.yaml").write_text("# nothing granted yet\n")
    assert load_trust(tmp_path) == {}


def test_http_listen(tmp_path: Path) -> None:
    from hearthfile.config import DEFAULT_HTTP_PORT, HttpConfig

    assert load_config(tmp_path).http == HttpConfig()
    assert HttpConfig().listen == Address("127.0.0.1", DEFAULT_HTTP_PORT)
    assert not HttpConfig().explicit
    (tmp_path / "config.yaml").write_text("http:\n  listen: off\n")
    assert load_config(tmp_path).http == HttpConfig(listen=None, explicit=True)
    (tmp_path / "config.yaml").write_text("http:\n  listen: 127.0.0.1:0\n")
    assert load_config(tmp_path).http.listen == Address("127.0.0.1", 0)
    (tmp_path / "config.yaml").write_text("http:\n  lisen: 127.0.0.1:0\n")
    with pytest.raises(ConfigError, match=r"http\.lisen: unknown key \(did you mean 'listen'"):
        load_config(tmp_path)
    flag = with_overrides(load_config(tmp_path.parent / "nothing"), http="off")
    assert flag.http == HttpConfig(listen=None, explicit=True)
    with pytest.raises(ConfigError, match="--http"):
        with_overrides(Config(), http="nowhere")


def test_max_store_bytes_is_a_size_or_unset(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("file:\n  max_store_bytes: 2GiB\n")
    assert load_config(tmp_path, path).file.max_store_bytes == 2 * 1024**3
    path.write_text("file:\n  max_store_bytes: lots\n")
    with pytest.raises(ConfigError, match="max_store_bytes"):
        load_config(tmp_path, path)


def test_introducers_policy(tmp_path: Path) -> None:
    assert load_config(tmp_path, write_config(tmp_path, "introducers: joined\n")).introducers == (
        "joined"
    )
    with pytest.raises(ConfigError, match="introducers: expected one of trusted, joined, none"):
        load_config(tmp_path, write_config(tmp_path, "introducers: everyone\n"))


def test_every_section_field_declares_how_it_is_read() -> None:
    """One builder reads every section through its fields' parsers: a new field
    without one would be accepted unchecked."""
    from dataclasses import fields

    from hearthfile.config import DownloadsConfig

    for section in (FileConfig, LimitsConfig, GossipConfig, DownloadsConfig):
        for f in fields(section):
            assert callable(f.metadata.get("parse")), f"{section.__name__}.{f.name}"
