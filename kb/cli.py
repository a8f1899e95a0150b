"""`kb`: the command line. Thin: parse options, call one library function, map errors to exit codes.

Exit codes: 0 success, 1 a check found problems, 2 bad usage or input, 130 interrupted.
Each command lives in `kb/commands/<name>.py` and exposes `register(subparsers)`; a command's
parser sets `func(args) -> int`. Command modules import heavy libraries (torch, transformers,
httpx, jinja2) inside `func`, never at module level, so `kb --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .errors import KBError

# Explicit list: grep-able, no import-time discovery.
_COMMAND_MODULES = (
    "validate",
    "records",
    "build",
    "reproduce",
    "net",
    "cache",
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
        importlib.import_module(f"kb.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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
    except KeyboardInterrupt:
        print("kb: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
