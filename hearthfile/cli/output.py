"""What the CLI prints: data as text or ``--json``, errors as one line, progress bars.

JSON carries sizes as integers of bytes and times as ISO 8601 (UTC); text shows
sizes in human units. Standard output is written only through ``Output``, so a
reader that went away (``hearthfile events | head``) ends the command quietly and
a failed write (``> /dev/full``) is one clear error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

from hearthfile.cli.errors import OutputError

#: Below this size a progress bar would only flicker.
PROGRESS_MIN_BYTES: Final = 16 * 1024 * 1024
#: Event fields that hold times.
EVENT_TIME_FIELDS: Final = frozenset({"at"})

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from hearthfile.blobs.files import Buffer
    from hearthfile.services.results import AddProgress, TransferState

R = TypeVar("R")


def iso_time(seconds: float) -> str:
    """``2026-12-04T19:22:49.123Z``."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def human_bytes(count: int) -> str:
    """``512 B``, ``1.5 KiB``, ``683.6 MiB``."""
    if count < 1024:
        return f"{count} B"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def as_json(value: object) -> object:
    """A result (or a list of them, or a plain map) ready for ``json.dumps``."""
    if isinstance(value, list):
        return [as_json(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            name: _json_field(unit, getattr(value, name)) for name, unit in field_units(type(value))
        }
    return value


def _json_field(unit: str | None, value: object) -> object:
    if unit == "time" and isinstance(value, int | float):
        return iso_time(value)
    return value


def text_field(kind: type[Any], name: str, value: object) -> str:
    """One field of a result as text: sizes in human units, times in ISO 8601."""
    unit = unit_of(kind, name)
    if unit == "time" and isinstance(value, int | float):
        return iso_time(value)
    if unit == "bytes" and isinstance(value, int):
        return f"{human_bytes(value)} ({value} bytes)"
    return "-" if value is None else str(value)


def unit_of(kind: type[object], name: str) -> str | None:
    """``"time"``, ``"bytes"`` or None for field ``name`` of result type ``kind`` (the
    ``unit`` in the field's metadata: ``services.results``)."""
    return dict(field_units(kind)).get(name)


def field_units(kind: type[object]) -> tuple[tuple[str, str | None], ...]:
    """Each field of result type ``kind`` with its unit, in order (looked up once a
    type: ``ls --json`` of 100,000 blobs asked ``dataclasses.fields`` a million times)."""
    units = _FIELD_UNITS.get(kind)
    if units is None:
        fields = dataclasses.fields(kind)  # type: ignore[arg-type]
        units = _FIELD_UNITS[kind] = tuple((f.name, f.metadata.get("unit")) for f in fields)
    return units


_FIELD_UNITS: dict[type[object], tuple[tuple[str, str | None], ...]] = {}


def event_json(event: dict[str, Any]) -> dict[str, Any]:
    return {k: iso_time(v) if k in EVENT_TIME_FIELDS else v for k, v in event.items()}


class Output:
    """Standard output for one command, text or JSON."""

    def __init__(self, *, json_mode: bool) -> None:
        self.json = json_mode

    def line(self, text: str) -> None:
        with stdout_errors():
            sys.stdout.write(text + "\n")

    def lines(self, texts: list[str]) -> None:
        if texts:  # one write: a store may list hundreds of thousands
            self.line("\n".join(texts))

    def data(self, value: object) -> None:
        self.line(json.dumps(as_json(value), sort_keys=True))

    def show(self, result: R, text: Callable[[R], str]) -> None:
        """``result`` as JSON under --json, else as ``text(result)``."""
        if self.json:
            self.data(result)
        else:
            self.line(text(result))

    def rows(self, rows: Sequence[R], text: Callable[[R], str]) -> None:
        """``rows`` as one JSON list under --json, else one ``text(row)`` line each."""
        if self.json:
            self.data(rows)
        else:
            self.lines([text(row) for row in rows])

    def stream_rows(self, pages: Iterable[Sequence[R]], text: Callable[[R], str]) -> None:
        """As ``rows``, written page by page as ``pages`` yields them (the same bytes)."""
        first = True
        for page in pages:
            if self.json:  # the page as a JSON list, without its brackets
                items = json.dumps(as_json(list(page)), sort_keys=True)[1:-1]
                self.write_text(("[" if first else ", ") + items)
            else:
                self.write_text("".join(text(row) + "\n" for row in page))
            first = False
        if self.json:
            self.write_text("[]\n" if first else "]\n")

    def write_text(self, text: str) -> None:
        with stdout_errors():
            sys.stdout.write(text)

    def fields(self, result: DataclassInstance) -> None:
        """Every field of a result, one ``key value`` line each (or JSON)."""
        if self.json:
            self.data(result)
            return
        kind = type(result)
        self.lines(
            [
                f"{f.name:14} {text_field(kind, f.name, getattr(result, f.name))}"
                for f in dataclasses.fields(kind)
            ]
        )

    def flush(self) -> None:
        with stdout_errors():
            sys.stdout.flush()

    def write_bytes(self, data: Buffer) -> None:
        with stdout_errors():
            sys.stdout.buffer.write(data)


@contextlib.contextmanager
def stdout_errors() -> Iterator[None]:
    """Turn a failed write to standard output into ``OutputError``; a closed pipe
    (``BrokenPipeError``) passes through, for ``main`` to end quietly."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OutputError(f"cannot write to standard output: {exc.strerror}") from None


def silence_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null so the exit flush is silent."""
    with contextlib.suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


class ProgressBar:
    """A progress bar on stderr (bytes, rate, ETA), shown only on a terminal and for
    large jobs. Created lazily from the first update, which carries the total."""

    def __init__(self, label: str, *, enabled: bool = True) -> None:
        self.label = label
        self.enabled = enabled
        self._bar: Any = None
        self._task: Any = None

    def update(self, done: int, total: int) -> None:
        if self._bar is None:
            if not self.enabled or total < PROGRESS_MIN_BYTES or not sys.stderr.isatty():
                return
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._bar = Progress(
                TextColumn(self.label),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=total)
        self._bar.update(self._task, completed=done, total=total)

    def transfer(self, state: TransferState) -> None:
        self.update(state.done_bytes, state.total_bytes)

    def added(self, state: AddProgress) -> None:
        self.update(state.done_bytes, state.total_bytes)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
