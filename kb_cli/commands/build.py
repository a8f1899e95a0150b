"""`kb build`: render the website and the generated README section; `--check` reports staleness."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kb.errors import KBError
from kb.fsutil import check_writable
from kb.paths import repo_root

DEFAULT_DOCS = "docs/generated"
DEFAULT_SITE = "site"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "build",
        help="generate the website, papers.json/papers.bib and the README tables",
        description=(
            "Validate the knowledge base, render every page into the generated docs folder, build the "
            "site with mkdocs (--strict) and refresh the committed generated files: the README section "
            "between its markers, docs/badges/*.svg and schema/paper.schema.json. The docs folder and the "
            "site are replaced atomically; a failed or interrupted build leaves the previous ones intact, and "
            "output directories that cannot be written are refused before anything is rendered."
        ),
    )
    p.add_argument("--out", metavar="DIR", type=Path, help=f"where the site goes (default: {DEFAULT_SITE}/)")
    p.add_argument(
        "--docs-out",
        metavar="DIR",
        type=Path,
        help=f"where the generated Markdown goes (default: {DEFAULT_DOCS}/)",
    )
    p.add_argument(
        "--no-mkdocs", action="store_true", help="render the Markdown and exports only; skip mkdocs"
    )
    p.add_argument(
        "--site-only", action="store_true", help="leave README.md, docs/badges and the JSON Schema untouched"
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 and list each committed generated file that is stale, and each committed "
        "reproduction whose code changed since it was produced (with the command that refreshes it)",
    )
    p.set_defaults(func=_build)


def _build(args: argparse.Namespace) -> int:
    from kb.checks import check_all
    from kb.store import load_kb
    from site_builder.build import build, render_all, stale_committed

    if args.check and (args.out or args.docs_out or args.no_mkdocs or args.site_only):
        raise KBError(
            "--check writes nothing; it cannot be combined with --out, --docs-out, --no-mkdocs or --site-only"
        )
    root = repo_root()
    docs_out = (args.docs_out or root / DEFAULT_DOCS).resolve()
    site_out = None if args.no_mkdocs else (args.out or root / DEFAULT_SITE).resolve()
    if not args.check:  # every output path is checked before the records are even read
        if site_out is not None and (
            site_out == docs_out or docs_out in site_out.parents or site_out in docs_out.parents
        ):
            raise KBError("--out and --docs-out must not contain one another")
        check_writable(docs_out, what="--docs-out directory", directory=True)
        if site_out is not None:
            check_writable(site_out, what="--out directory", directory=True)
        if not args.site_only:
            check_writable(root / "README.md", what="generated file")
    kb = load_kb(root)
    problems = check_all(kb, _runnable())
    if problems:
        more = f" (and {len(problems) - 1} more; run `kb validate`)" if len(problems) > 1 else ""
        raise KBError(f"refusing to build: {problems[0]}{more}", code=1)
    if args.check:
        stale = stale_committed(root, render_all(kb))
        for rel in stale:
            print(f"{rel}: stale; run `kb build`", file=sys.stderr)
        results, kept = _stale_results(root, [r.paper.id for r in kb.records if r.paper.implementation])
        for line in results:
            print(line, file=sys.stderr)
        if kept:
            print(kept, file=sys.stderr)
        return 1 if stale or results else 0
    changed = build(kb, docs_out, site_out, write_repo_files=not args.site_only)
    for rel in changed:
        print(f"updated {rel}", file=sys.stderr)
    print(
        f"rendered {len(kb.records)} papers into {_show(docs_out, root)}"
        + (f"; site in {_show(site_out, root)}" if site_out else ""),
        file=sys.stderr,
    )
    return 0


def _show(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root.resolve())) + "/"
    except ValueError:
        return str(path)


def _stale_results(root: Path, runnable: list[str]) -> tuple[list[str], str | None]:
    """Committed reproductions and sweeps whose code changed since they were produced, the runnable papers
    (records with an implementation) that have no result, and the one line about the results whose code changed
    but whose behaviour did not (`reference_impls.registry.freshness`)."""
    if _runnable() is None:
        return [], None
    from reference_impls.registry.freshness import behaviour_line, judge_results
    from site_builder.inputs import load_reproductions, load_sweeps

    fresh = judge_results(root, load_reproductions(root), load_sweeps(root), runnable)
    return fresh.stale, behaviour_line(fresh)


def _runnable() -> dict[str, str] | None:
    """Paper id -> implementation file, from the harness registry (torch-free), if it is installed."""
    try:
        from reference_impls.registry import runnable_papers
    except ImportError:
        return None
    return runnable_papers()
