"""The gossip simulation scenarios, shared by the tests and the script (pure).

Owns the measurements of scripts/sim_gossip.py and tests/unit/test_gossip_sim.py,
so both judge the same runs: how many rounds a new advert takes to reach 99%
and 100% of the honest nodes, what a round costs in bytes, how long a healed
partition takes to catch up, and what hostile members achieve.

Each scenario first lets the network converge (every honest node holds every
honest origin's records as they were at the start), then measures. A round is
one ``interval_s``; rounds are counted from the one in which the news is
published, which also pushes it at once to ``fanout`` peers.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

from hearthfile.cids import cid_of
from hearthfile.identity import NodeId
from hearthfile.testing.gossip_sim import MemoryBound, Network, SimConfig

#: Rounds a scenario waits for convergence before giving up (None in results).
MAX_ROUNDS = 60


@dataclass(frozen=True, slots=True)
class Spread:
    warmup_rounds: int | None
    rounds_99: int | None
    rounds_100: int | None
    #: Bytes sent per honest node per round while the news spread (digests included).
    bytes_per_node_round: float
    violations: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Partition:
    warmup_rounds: int | None
    #: Rounds after the heal until every node holds everything published until then.
    catch_up_rounds: int | None
    violations: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Hostility:
    spread: Spread
    rejections: Counter[str]
    #: Records and CIDs held by the fullest honest node, and the bound on them.
    max_records: int
    max_cids: int
    bound: MemoryBound


def spread(cfg: SimConfig) -> Spread:
    """Rounds for one new advert to reach the honest nodes of a converged network."""
    net = Network(cfg)
    return _spread(net)


def partition(cfg: SimConfig, split_rounds: int = 20) -> Partition:
    """Split the network in halves for ``split_rounds`` while a tenth of the nodes
    publish news, heal it, and count the rounds until everyone has everything."""
    net = Network(cfg)
    warmup = _converge(net)
    ids = list(net.nodes)
    net.rng.shuffle(ids)
    net.partition({node: i % 2 for i, node in enumerate(ids)})
    publishers = net.rng.sample(net.honest_ids, max(1, len(net.honest_ids) // 10))
    for r in range(split_rounds):
        if r % 5 == 0:
            for origin in publishers:
                net.publish(origin, [cid_of(f"split/{origin}/{r}".encode())])
        net.run_round()
    target = net.truth()
    net.heal()
    rounds = net.run_until(lambda: net.caught_up(target), MAX_ROUNDS)
    return Partition(warmup, rounds, tuple(net.violations))


def hostility(cfg: SimConfig) -> Hostility:
    """A tenth of the nodes hostile (unless ``cfg.hostile`` says otherwise): spread a
    new advert among the honest ones, then run on, and report what got through."""
    if cfg.hostile == 0:
        cfg = replace(cfg, hostile=max(1, cfg.nodes // 10))
    net = Network(cfg)
    result = _spread(net, extra_rounds=5)
    held = [net.nodes_retained(n) for n in net.honest_ids]
    return Hostility(
        result,
        net.rejections(),
        max(h.records for h in held),
        max(h.cids for h in held),
        net.bound,
    )


def _converge(net: Network) -> int | None:
    target = net.truth()
    return net.run_until(lambda: net.caught_up(target), MAX_ROUNDS)


def _spread(net: Network, extra_rounds: int = 0) -> Spread:
    warmup = _converge(net)
    origin: NodeId = net.rng.choice(net.honest_ids)
    sent = net.sent_bytes()
    seq = net.publish(origin, [cid_of(b"news/" + origin.public_key)])
    rounds_99 = rounds_100 = None
    for rounds in range(1, MAX_ROUNDS + 1):
        net.run_round()
        known = net.knowing(origin, seq)
        if rounds_99 is None and known >= 0.99:
            rounds_99 = rounds
        if known == 1.0:
            rounds_100 = rounds
            break
    measured = rounds_100 or MAX_ROUNDS
    per_node_round = (net.sent_bytes() - sent) / len(net.honest_ids) / measured
    for _ in range(extra_rounds):
        net.run_round()
    return Spread(warmup, rounds_99, rounds_100, per_node_round, tuple(net.violations))
