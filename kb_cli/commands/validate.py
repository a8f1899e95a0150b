"""`kb validate` and `kb schema`: check every record, note and vocabulary file; keep the JSON Schema fresh."""

from __future__ import annotations

import argparse
import json
import sys

from kb.errors import KBError
from kb.paths import repo_root


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "validate",
        help="check all records, the vocabulary and cross references",
        description="Check every papers/*.yaml, challenge/*.md and concepts/*.yaml. "
        "Prints one line per problem (file:line: field: message); exit 1 if any.",
    )
    p.add_argument("--json", action="store_true", help="print problems as a JSON list")
    p.set_defaults(func=_validate)

    s = sub.add_parser(
        "schema",
        help="write (or --check) the JSON Schema for editors",
        description="Generate schema/paper.schema.json from the pydantic models and the vocabulary.",
    )
    s.add_argument(
        "--check", action="store_true", help="exit 1 if the committed schema is stale; write nothing"
    )
    s.set_defaults(func=_schema)


def _validate(args: argparse.Namespace) -> int:
    from kb.checks import check_all
    from kb.store import load_kb

    root = repo_root()
    if not (root / "papers").is_dir():
        raise KBError(f"no papers/ directory under {root} (set KB_ROOT or run inside the repository)")
    kb = load_kb(root)
    problems = check_all(kb, _runnable())
    if args.json:
        print(json.dumps([p.__dict__ for p in problems], indent=2))
    else:
        for p in problems:
            print(p)
    files = len({p.file for p in problems})
    summary = (
        f"{len(problems)} problem(s) in {files} file(s)" if problems else f"{len(kb.records)} records OK"
    )
    print(summary, file=sys.stderr)
    return 1 if problems else 0


def _schema(args: argparse.Namespace) -> int:
    from kb.fsutil import write_text_atomic
    from kb.jsonschema import SCHEMA_PATH, render_schema
    from kb.vocab import VocabularyError, load_vocabulary

    root = repo_root()
    try:
        vocab = load_vocabulary(root / "concepts")
    except VocabularyError as exc:
        raise KBError(str(exc), code=1) from None
    text = render_schema(vocab)
    target = root / SCHEMA_PATH
    current = target.read_text(encoding="utf-8") if target.is_file() else None
    if args.check:
        if current != text:
            print(f"{SCHEMA_PATH} is stale; run `kb schema`", file=sys.stderr)
            return 1
        return 0
    if current != text:
        write_text_atomic(target, text)
        print(f"wrote {SCHEMA_PATH}", file=sys.stderr)
    return 0


def _runnable() -> dict[str, str] | None:
    """Paper id -> implementation file, from the harness registry (torch-free), if it is installed."""
    try:
        from reference_impls.registry import runnable_papers
    except ImportError:
        return None
    return runnable_papers()
