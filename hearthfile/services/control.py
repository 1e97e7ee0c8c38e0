"""What every ``node.*`` capability declares: the local CLI's control of its own
daemon, open to the node's own key only (trust ``self``), experimental (pure)."""

from __future__ import annotations

from hearthfile.bus.capability import CapabilityDescriptor, TrustLevel


def control_descriptor(
    name: str, timeout_s: float = 30, max_concurrent: int = 16
) -> CapabilityDescriptor:
    return CapabilityDescriptor(
        name=name,
        version=(1, 0),
        trust_required=TrustLevel.SELF,
        max_concurrent=max_concurrent,
        timeout_seconds=timeout_s,
        idempotent=False,
        stability="experimental",
    )
