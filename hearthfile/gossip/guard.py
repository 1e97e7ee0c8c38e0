"""Bounds on what gossip makes a node do for others: log lines and dials (pure).

``RejectionLog`` turns a stream of rejected records into at most one log line per
``SUMMARY_INTERVAL_S`` (the first rejection is reported at once, later ones are
counted by reason and reported together), so a peer sending 30,000 bad records
costs a few lines, not 30,000.

``DialBudget`` decides whether to dial an address learned from a node record. With
open membership anyone can mint node records naming addresses of their choosing;
without a bound, a thousand fresh records would make us dial a thousand addresses
an attacker picked. Each origin and each address is dialled at most once per
``REDIAL_S``, and all dials together at most ``DIAL_BURST`` at once, refilled at
``DIALS_PER_MINUTE``. Memory stays bounded: at most ``MAX_REMEMBERED`` origins and
addresses are remembered (the oldest forgotten first).

Time is an argument (``now`` in seconds), as everywhere in gossip/.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Final

#: One summary line of rejected records at most this often.
SUMMARY_INTERVAL_S: Final = 10.0
#: Dials to learned addresses: burst, and sustained rate.
DIAL_BURST: Final = 16
DIALS_PER_MINUTE: Final = 12
#: The same origin, or the same address, is dialled again only after this long.
REDIAL_S: Final = 300.0
#: Origins and addresses remembered for REDIAL_S (each, at most).
MAX_REMEMBERED: Final = 4096


class RejectionLog:
    """Rejected records, counted by reason, reported at most once per interval."""

    def __init__(self, interval_s: float = SUMMARY_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._reasons: Counter[str] = Counter()
        self._senders: set[str] = set()
        self._last_line: float | None = None
        self.total = 0

    def add(self, sender: str, reason: str, now: float) -> str | None:
        """Count one rejection; the line to log now, if one is due."""
        self.total += 1
        self._reasons[reason] += 1
        if len(self._senders) < 100:
            self._senders.add(sender)
        if self._last_line is not None and now - self._last_line < self.interval_s:
            return None
        return self._line(now)

    def flush(self, now: float) -> str | None:
        """The summary of what was counted since the last line, if one is due."""
        if not self._reasons:
            return None
        if self._last_line is not None and now - self._last_line < self.interval_s:
            return None
        return self._line(now)

    def _line(self, now: float) -> str:
        reasons = ",".join(f"{r}:{n}" for r, n in sorted(self._reasons.items()))
        senders = ",".join(sorted(self._senders)[:5])
        line = (
            f"gossip_rejected records={sum(self._reasons.values())} reasons={reasons} "
            f"senders={len(self._senders)} ({senders})"
        )
        self._reasons.clear()
        self._senders.clear()
        self._last_line = now
        return line


class DialBudget:
    """Whether to dial an address a node record named (see the module docstring)."""

    def __init__(self) -> None:
        self._tokens = float(DIAL_BURST)
        self._at: float | None = None
        self._recent: OrderedDict[str, float] = OrderedDict()  # origin or address -> when

    def allow(self, origin: str, address: str, now: float) -> bool:
        """Take a dial for ``origin`` at ``address`` if the bounds allow it."""
        self._refill(now)
        if self._tokens < 1 or self._dialled(origin, now) or self._dialled(address, now):
            return False
        self._tokens -= 1
        for key in (origin, address):
            self._recent[key] = now
            self._recent.move_to_end(key)
        while len(self._recent) > 2 * MAX_REMEMBERED:
            self._recent.popitem(last=False)
        return True

    def _dialled(self, key: str, now: float) -> bool:
        when = self._recent.get(key)
        return when is not None and now - when < REDIAL_S

    def _refill(self, now: float) -> None:
        if self._at is not None:
            gained = max(0.0, now - self._at) * DIALS_PER_MINUTE / 60
            self._tokens = min(float(DIAL_BURST), self._tokens + gained)
        self._at = now
