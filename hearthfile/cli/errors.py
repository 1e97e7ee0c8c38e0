"""Exit codes and the one-line description of every failure the CLI reports."""

from __future__ import annotations

from typing import Final

from hearthfile.blobs.chunker import BlobError
from hearthfile.errors import HearthError, ServiceError

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130


class CliError(HearthError):
    """A failure to report as one line, with its exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


class OutputError(CliError):
    """Standard output cannot be written (a full disk, an I/O error); a closed pipe
    is not one of these: the reader stopped reading, which is not a failure."""


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
    if isinstance(exc, ServiceError | BlobError):
        if exc.code == "not_found":
            return f"not found: {exc.detail}"
        return f"{exc.code.replace('_', ' ')}: {exc.detail}" if exc.detail else exc.code
    return str(exc)


def error_code(exc: BaseException) -> str | None:
    """The wire or store error code behind a failure, when there is one."""
    return exc.code if isinstance(exc, ServiceError | BlobError) else None
