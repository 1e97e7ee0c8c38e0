"""The ``hearthfile`` command line (DESIGN.md section 8).

Commands, flags and exit codes are a contract: 0 ok, 1 the operation failed,
2 usage or configuration error. Every failure is one line on stderr (one JSON
object under ``--json``), never a traceback; a closed pipe is not a failure.

The parts: ``parser`` (arguments), ``commands`` (one function per command),
``client`` (a typed client of the node, the same protocol whether a daemon runs
or not) and ``output`` (text, JSON, progress).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys

from hearthfile.cli.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    OutputError,
    error_code,
    first_failure,
    report,
)
from hearthfile.cli.output import Output, silence_stdout
from hearthfile.cli.parser import build_parser

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:
        print("hearthfile: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    out = Output(json_mode=args.json)
    try:
        code = _run(args, out)
        out.flush()
        return code
    except BrokenPipeError:
        silence_stdout()
        return EXIT_OK
    except OutputError as exc:
        silence_stdout()  # what stayed buffered must not fail again at exit
        return _fail(out, exc, str(exc), exc.code)
    except KeyboardInterrupt as exc:
        # End here: a Ctrl-C trio still holds back would otherwise surface again while
        # the interpreter exits, and kill it by the signal after the message.
        _fail(out, exc, "interrupted", EXIT_INTERRUPTED)
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)
    except Exception as exc:
        reported = report(exc)
        if reported is None:
            raise
        return _fail(out, exc, *reported)


def _run(args: argparse.Namespace, out: Output) -> int:
    """Run the command (its quick path first, if it has one; under trio if it is
    async); a failure that arrives wrapped in exception groups (from a nursery) is
    raised as itself, so it is reported like any other."""
    quick = args.func.load_quick()
    if quick is not None:
        code = quick(args, out)
        if code is not None:
            return int(code)
    func = args.func.load()
    if not inspect.iscoroutinefunction(func):
        return int(func(args, out))
    import trio

    try:
        return int(trio.run(func, args, out))
    except BaseExceptionGroup as group:
        leaf = first_failure(group)
        if isinstance(leaf, Exception | KeyboardInterrupt):
            raise leaf from None
        raise


def _fail(out: Output, exc: BaseException, message: str, code: int) -> int:
    if out.json:
        fields = {"error": message, "exit_code": code, "code": error_code(exc)}
        print(json.dumps(fields, sort_keys=True), file=sys.stderr)
    else:
        print(f"hearthfile: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
