"""Trust levels and their order (pure).

Every authenticated peer has one level (DESIGN.md section 4): ``self`` (the node's own
key, used by the local CLI) > ``trusted`` > ``member`` > ``stranger``. A capability
declares the level it needs; comparisons follow the order of the levels.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final


class TrustLevel(IntEnum):
    """How much a node trusts a peer; comparisons follow the order of the levels."""

    STRANGER = 0
    MEMBER = 1
    TRUSTED = 2
    SELF = 3

    @classmethod
    def parse(cls, text: str) -> TrustLevel:
        """``"member"`` -> ``MEMBER``; raises ValueError naming the accepted words."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            words = ", ".join(level.label for level in cls)
            raise ValueError(f"trust level must be one of {words}, not {text!r}") from None

    @classmethod
    def parse_grantable(cls, text: str) -> TrustLevel:
        """``member`` or ``trusted``, the levels an operator (or an invite) can grant;
        ValueError otherwise."""
        level = cls.parse(text) if text.strip().lower() in GRANTABLE_WORDS else None
        if level is None:
            raise ValueError(f"trust level must be member or trusted, not {text!r}")
        return level

    @property
    def label(self) -> str:
        """The lowercase word used in config files and on the wire."""
        return self.name.lower()


#: ``self`` is implied by the node's own key and ``stranger`` is the absence of an
#: entry, so neither can be granted.
GRANTABLE_WORDS: Final = ("member", "trusted")
