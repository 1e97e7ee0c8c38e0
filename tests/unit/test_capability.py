"""Descriptors, trust levels, registry and admission (hearthfile/bus/capability.py)."""

from __future__ import annotations

from typing import Any

import pytest

from hearthfile.bus.capability import (
    DESCRIBE_DESCRIPTOR,
    CallContext,
    CapabilityDescriptor,
    Registry,
    Rejection,
    TrustLevel,
    admit,
)
from hearthfile.errors import WIRE_ERROR_CODES


def descriptor(**overrides: Any) -> CapabilityDescriptor:
    fields: dict[str, Any] = {
        "name": "file.read",
        "version": (1, 2),
        "trust_required": TrustLevel.MEMBER,
        "max_concurrent": 2,
        "timeout_seconds": 30.0,
    }
    fields.update(overrides)
    return CapabilityDescriptor(**fields)


async def handler(ctx: CallContext) -> Any:
    return None


def test_trust_levels_are_ordered() -> None:
    assert TrustLevel.STRANGER < TrustLevel.MEMBER < TrustLevel.TRUSTED < TrustLevel.SELF


@pytest.mark.parametrize(
    ("text", "level"),
    [
        ("member", TrustLevel.MEMBER),
        ("trusted", TrustLevel.TRUSTED),
        (" Stranger ", TrustLevel.STRANGER),
    ],
)
def test_trust_level_parses_config_words(text: str, level: TrustLevel) -> None:
    assert TrustLevel.parse(text) is level
    assert TrustLevel.parse(level.label) is level


def test_trust_level_parse_names_the_choices() -> None:
    with pytest.raises(ValueError, match="member"):
        TrustLevel.parse("friend")


@pytest.mark.parametrize(
    "overrides",
    [
        {"name": "Read"},
        {"name": "file"},
        {"name": "file..read"},
        {"name": "file.read "},
        {"name": "a." + "b" * 200},
        {"version": (1, -1)},
        {"version": (70_000, 0)},
        {"stability": "beta"},
        {"max_concurrent": 0},
        {"timeout_seconds": 0},
    ],
)
def test_descriptor_refuses_bad_fields(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="capability"):
        descriptor(**overrides)


def test_describe_is_plain_data() -> None:
    d = descriptor(stream_schema={"item": "chunk"}, idempotent=True)
    assert d.describe() == {
        "name": "file.read",
        "version": [1, 2],
        "stability": "stable",
        "trust_required": "member",
        "max_concurrent": 2,
        "timeout_seconds": 30.0,
        "idempotent": True,
        "request_schema": {},
        "response_schema": {},
        "stream_schema": {"item": "chunk"},
    }


def test_registry_registers_once_and_lists_sorted() -> None:
    registry = Registry()
    registry.register(descriptor(name="file.read"), handler)
    registry.register(descriptor(name="bus.describe"), handler)
    with pytest.raises(ValueError, match="already"):
        registry.register(descriptor(name="file.read"), handler)
    entry = registry.lookup("file.read")
    assert entry is not None and entry.handler is handler
    assert registry.lookup("file.put") is None
    assert "file.read" in registry
    assert [d["name"] for d in registry.describe()] == ["bus.describe", "file.read"]


def test_admit_runs_a_good_request() -> None:
    assert admit(descriptor(), "file.read", (1, 0), TrustLevel.MEMBER, 1) is None
    assert admit(descriptor(), "file.read", (1, 9), TrustLevel.SELF, 0) is None


def test_admit_unknown_capability_is_not_found() -> None:
    assert admit(None, "file.nope", (1, 0), TrustLevel.SELF, 0) == Rejection(
        "not_found", "no capability 'file.nope' here"
    )


def test_admit_low_trust_is_unauthorized() -> None:
    rejection = admit(descriptor(), "file.read", (1, 0), TrustLevel.STRANGER, 0)
    assert rejection is not None and rejection.code == "unauthorized"
    assert "member" in rejection.message and "stranger" in rejection.message


def test_admit_major_mismatch_is_bad_request_with_both_versions() -> None:
    rejection = admit(descriptor(), "file.read", (2, 0), TrustLevel.MEMBER, 0)
    assert rejection is not None and rejection.code == "bad_request"
    assert "2.0" in rejection.message and "1.2" in rejection.message


def test_admit_at_max_concurrent_is_busy() -> None:
    rejection = admit(descriptor(), "file.read", (1, 0), TrustLevel.MEMBER, 2)
    assert rejection is not None and rejection.code == "busy"


def test_admit_checks_trust_before_version_and_load() -> None:
    rejection = admit(descriptor(), "file.read", (9, 0), TrustLevel.STRANGER, 99)
    assert rejection is not None and rejection.code == "unauthorized"


def test_rejection_codes_are_wire_codes() -> None:
    cases = [
        admit(None, "x.y", (1, 0), TrustLevel.SELF, 0),
        admit(descriptor(), "file.read", (1, 0), TrustLevel.STRANGER, 0),
        admit(descriptor(), "file.read", (2, 0), TrustLevel.SELF, 0),
        admit(descriptor(), "file.read", (1, 0), TrustLevel.SELF, 5),
    ]
    assert all(r is not None and r.code in WIRE_ERROR_CODES for r in cases)


def test_bus_describe_is_open_to_strangers() -> None:
    assert DESCRIBE_DESCRIPTOR.name == "bus.describe"
    assert admit(DESCRIBE_DESCRIPTOR, "bus.describe", (1, 0), TrustLevel.STRANGER, 0) is None
