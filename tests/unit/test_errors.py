"""The error taxonomy's one helper (hearthfile/errors.py): ``collapse``."""

from __future__ import annotations

from hearthfile.errors import PeerUnavailable, ServiceError, collapse


def test_a_group_of_our_errors_is_its_service_error() -> None:
    err = ServiceError("not_found", "gone")
    group = ExceptionGroup("g", [PeerUnavailable("ab"), ExceptionGroup("inner", [err])])
    assert collapse(group) is err


def test_a_group_of_lost_peers_is_a_lost_peer() -> None:
    lost = PeerUnavailable("ab", "closed")
    assert collapse(ExceptionGroup("g", [lost])) is lost


def test_a_group_with_a_bug_stays_a_group() -> None:
    group = ExceptionGroup("g", [ServiceError("timeout"), KeyError("bug")])
    assert collapse(group) is group
