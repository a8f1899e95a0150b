"""`kb`: the command line. Thin: parse options, call one library function, map errors to exit codes.

Exit codes: 0 success, 1 a check found problems, 2 bad usage or input, 130 interrupted (Ctrl-C), 143
terminated (SIGTERM; 129 for SIGHUP). Both signals unwind the stack like Ctrl-C does, so every atomic
write in progress removes its temporary file or directory and nothing half-written is left behind.
Each command lives in `kb_cli/commands/<name>.py` and exposes `register(subparsers)`; a command's
parser sets `func(args) -> int`. Command modules import heavy libraries (torch, transformers,
httpx, jinja2) inside `func`, never at module level, so `kb --help` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator, Sequence

from kb import __version__
from kb.errors import KBError

# Explicit list: grep-able, no import-time discovery.
_COMMAND_MODULES = (
    "validate",
    "records",
    "build",
    "reproduce",
    "net",
    "cache",
    "fingerprint",
    "eval",
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise KBError(f"{self.prog}: {message}", code=2)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = _Parser(
        prog="kb",
        description="pruning-kb: a validated catalogue of LLM pruning papers with runnable reference code.",
    )
    parser.add_argument("--version", action="version", version=f"kb {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in _COMMAND_MODULES:
        importlib.import_module(f"kb_cli.commands.{name}").register(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """A termination signal turned into an exception, so `finally` blocks and cleanups run."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum: int, _frame: object) -> None:
    signal.signal(signum, signal.SIG_DFL)  # a second signal during cleanup ends the process at once
    raise Terminated(signum)


@contextlib.contextmanager
def _signals_unwind() -> Iterator[None]:
    """Inside the block, SIGTERM and SIGHUP raise `Terminated` (main thread only; restored afterwards)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = (signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, _raise_terminated) for s in wanted}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        with _signals_unwind():
            return _main(argv)
    except Terminated as exc:  # a signal between the command's end and the handlers' restoration
        return _terminated(exc)


def _terminated(exc: Terminated) -> int:
    print(f"kb: terminated ({signal.Signals(exc.signum).name})", file=sys.stderr)
    return 128 + exc.signum


def _main(argv: Sequence[str] | None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if getattr(args, "func", None) is None:
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except KBError as exc:
        print(f"kb: error: {exc.message}", file=sys.stderr)
        return exc.code
    except Terminated as exc:
        return _terminated(exc)
    except KeyboardInterrupt:
        print("kb: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
