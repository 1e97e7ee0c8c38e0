"""Exit codes and the one-line description of every failure the CLI reports.

Failures are classified by class, but without importing the modules that define
them: a class is looked up only if its module is imported already (a command that
never loaded the store cannot have raised one of the store's errors), so naming
them here costs a quick command none of those imports.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Final, cast

from hearthfile.errors import HearthError, PeerUnavailable, RemoteProtocolError, ServiceError

if TYPE_CHECKING:
    from hearthfile.blobs.chunker import BlobError

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

#: The failures reported by kind, each class named ``module:Class``.
USAGE_ERRORS: Final = ("hearthfile.config:ConfigError", "hearthfile.cids:CidError")
PATH_ERRORS: Final = ("hearthfile.services.ops:PathError",)  # usage or not, as it says
BLOB_ERRORS: Final = ("hearthfile.blobs.chunker:BlobError",)  # a code and detail
OPERATION_ERRORS: Final = (
    *BLOB_ERRORS,
    "hearthfile.blobs.store:PinnedError",
    "hearthfile.blobs.store:StoreLocked",
    "hearthfile.identity:IdentityError",
)


class CliError(HearthError):
    """A failure to report as one line, with its exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


class OutputError(CliError):
    """Standard output cannot be written (a full disk, an I/O error); a closed pipe
    is not one of these: the reader stopped reading, which is not a failure."""


def loaded(refs: tuple[str, ...]) -> tuple[type[Exception], ...]:
    """The classes of ``refs`` (``module:Class``) whose modules are imported."""
    found = []
    for ref in refs:
        module, _, name = ref.partition(":")
        if module in sys.modules:
            found.append(getattr(sys.modules[module], name))
    return tuple(found)


def report(exc: Exception) -> tuple[str, int] | None:
    """The line and exit code of a failure the CLI reports; None for any other."""
    if isinstance(exc, CliError):
        return str(exc), exc.code
    if isinstance(exc, loaded(USAGE_ERRORS)):
        return str(exc), EXIT_USAGE
    if isinstance(exc, loaded(PATH_ERRORS)):
        return str(exc), EXIT_USAGE if getattr(exc, "usage", False) else EXIT_FAILED
    if isinstance(exc, (ServiceError, *loaded(OPERATION_ERRORS))):
        return describe(exc), EXIT_FAILED
    if isinstance(exc, PeerUnavailable | RemoteProtocolError):
        return f"connection to the daemon failed: {exc}", EXIT_FAILED
    if isinstance(exc, OSError):  # the home or the store cannot be used
        return describe_os_error(exc), EXIT_FAILED
    return None


def first_failure(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The failure a nursery's exception group stands for: an interrupt (Ctrl-C) if it
    holds one, else its first leaf."""
    interrupt = group.subgroup(KeyboardInterrupt)
    if interrupt is not None:
        return KeyboardInterrupt()
    first = group.exceptions[0]
    return first_failure(first) if isinstance(first, BaseExceptionGroup) else first


def describe_os_error(exc: OSError) -> str:
    """``cannot use /some/path: Not a directory``."""
    if exc.filename is not None:
        return f"cannot use {exc.filename}: {exc.strerror or exc}"
    return exc.strerror or str(exc)


def describe(exc: BaseException) -> str:
    """``not found: CID``, ``busy: detail``, or the exception's own text."""
    coded = _coded(exc)
    if coded is not None:
        if coded.code == "not_found":
            return f"not found: {coded.detail}"
        return f"{coded.code.replace('_', ' ')}: {coded.detail}" if coded.detail else coded.code
    return str(exc)


def error_code(exc: BaseException) -> str | None:
    """The wire or store error code behind a failure, when there is one."""
    coded = _coded(exc)
    return None if coded is None else coded.code


def _coded(exc: BaseException) -> ServiceError | BlobError | None:
    if isinstance(exc, (ServiceError, *loaded(BLOB_ERRORS))):
        return cast("ServiceError | BlobError", exc)
    return None
