"""Write the generated docs folder, the mkdocs site and the committed generated files.

Three groups of output:
  docs folder   every page, export and asset (default `docs/generated/`, gitignored, never edited);
  site          `mkdocs build --strict` of that folder (default `site/`);
  committed     the README section, `docs/badges/*.svg` and `schema/paper.schema.json`.
The docs folder and the site are replaced atomically and together: if rendering or mkdocs fails, or
the build is interrupted (Ctrl-C, SIGTERM), both stay as they were and no temporary directory remains.
`check_committed` compares the committed files without writing anything.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kb.errors import KBError
from kb.fsutil import atomic_directory, write_text_atomic
from kb.jsonschema import SCHEMA_PATH, render_schema
from kb.store import KnowledgeBase

from .context import papers_json, site_context
from .inputs import load_github_meta, load_reproductions, load_sweeps
from .readme import splice
from .render import render_badges, render_bibliography, render_pages, render_readme_section

README = "README.md"
BADGES_DIR = "docs/badges"
HANDWRITTEN_DIR = "docs"
MKDOCS_CONFIG = "mkdocs.yml"


@dataclass
class Rendered:
    pages: dict[str, str]
    committed: dict[str, str]  # path relative to the root -> wanted text
    stale_badges: list[str]  # badge files on disk that no value uses any more


def read_mkdocs_config(root: Path) -> dict[str, Any]:
    """mkdocs.yml as plain data, for the few settings the pages need (`repo_url`). A file that
    plain YAML cannot read (mkdocs allows `!!python/name` tags) counts as empty here; mkdocs itself
    reports real problems when it builds."""
    try:
        data = yaml.safe_load((root / MKDOCS_CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def render_all(kb: KnowledgeBase) -> Rendered:
    """Everything `kb build` produces, in memory."""
    root = kb.root
    ctx = site_context(
        kb, load_github_meta(root), load_reproductions(root), read_mkdocs_config(root), load_sweeps(root)
    )
    pages = render_pages(ctx, papers_json(kb, ctx), render_bibliography(kb.papers))
    for src in sorted((root / HANDWRITTEN_DIR).glob("*.md")):
        name = src.name
        if name in pages:
            raise KBError(f"docs/{name} clashes with a generated page of the same name", code=1)
        pages[name] = src.read_text(encoding="utf-8")
    readme_path = root / README
    readme = readme_path.read_text(encoding="utf-8") if readme_path.is_file() else ""
    committed = {README: splice(readme, render_readme_section(ctx)), SCHEMA_PATH: render_schema(kb.vocab)}
    badges = render_badges(ctx)
    for name, svg in badges.items():
        committed[f"{BADGES_DIR}/{name}"] = svg
    on_disk = sorted(p.name for p in (root / BADGES_DIR).glob("*.svg"))
    stale = [f"{BADGES_DIR}/{n}" for n in on_disk if n not in badges]
    return Rendered(pages=pages, committed=committed, stale_badges=stale)


def stale_committed(root: Path, rendered: Rendered) -> list[str]:
    """Committed generated files that differ from what `kb build` would write (or should not exist)."""
    out = []
    for rel, text in rendered.committed.items():
        path = root / rel
        try:
            current = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            current = None
        if current != text:
            out.append(rel)
    return sorted(out + rendered.stale_badges)


def write_committed(root: Path, rendered: Rendered) -> list[str]:
    changed = stale_committed(root, rendered)
    for rel in changed:
        if rel in rendered.committed:
            write_text_atomic(root / rel, rendered.committed[rel])
        else:
            (root / rel).unlink()
    return changed


def write_docs(pages: dict[str, str], target: Path) -> None:
    for rel, text in pages.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def fewer_collections(every: int = 50_000) -> Iterator[None]:
    """Run Python's cycle collector after every `every` new objects instead of every 700. A build makes
    millions of short-lived objects and each pass over the oldest generation walks every live one: with
    the default settings a 1,029-record build spent about 5% of its time there, at the same peak memory."""
    old = gc.get_threshold()
    gc.set_threshold(every, *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


@fewer_collections()
def build(
    kb: KnowledgeBase, docs_out: Path, site_out: Path | None, *, write_repo_files: bool = True
) -> list[str]:
    """Render into `docs_out`, build the site into `site_out` (skipped when None) and, unless told
    otherwise, refresh the committed generated files. Returns the committed files it changed."""
    rendered = render_all(kb)
    try:
        with atomic_directory(docs_out, replace=True) as tmp_docs:
            write_docs(rendered.pages, tmp_docs)
            if site_out is not None:
                with atomic_directory(site_out, replace=True) as tmp_site:
                    run_mkdocs(kb.root / MKDOCS_CONFIG, tmp_docs, tmp_site)
    except OSError as exc:  # a full disk or a directory made read-only meanwhile; nothing was replaced
        where = exc.filename or docs_out
        raise KBError(f"cannot write the site: {where}: {exc.strerror or exc}", code=2) from None
    return write_committed(kb.root, rendered) if write_repo_files else []


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage().splitlines()[0])


LEADERBOARDS_INDEX = "leaderboards/index.md"
# Only the index is in the navigation; the slice pages are reached from it and from paper pages, and
# mkdocs.yml's `not_in_nav` lets the strict build accept them outside the navigation.


# The navigation is mkdocs.yml's `nav` as written: no paper page is in it. Material renders the whole
# navigation into every page, so a section listing every paper made the build quadratic in the number
# of papers. Paper pages are reached from "Papers by year", the filter and search, and mkdocs.yml's
# `not_in_nav` lets the strict build accept them outside the navigation.
def run_mkdocs(config: Path, docs_dir: Path, site_dir: Path) -> None:
    """`mkdocs build --strict` with the docs and site folders overridden; one-line errors."""
    if not config.is_file():
        raise KBError(
            f"{config.name} not found in {config.parent}; the site cannot be built (try --no-mkdocs)", code=2
        )
    try:
        from mkdocs.commands.build import build as mkdocs_build
        from mkdocs.config import load_config
        from mkdocs.exceptions import Abort, ConfigurationError, MkDocsException
    except ImportError:
        raise KBError(
            "mkdocs is not installed; install the 'site' extra (pip install -e '.[site]')", code=2
        ) from None
    handler = _Collect()
    log = logging.getLogger("mkdocs")
    log.addHandler(handler)
    try:
        cfg = load_config(
            config_file=str(config), docs_dir=str(docs_dir), site_dir=str(site_dir), strict=True
        )
        mkdocs_build(cfg)
        drop_source_maps(site_dir)
    except (Abort, ConfigurationError, MkDocsException) as exc:
        first = handler.messages[0] if handler.messages else str(exc).splitlines()[0]
        more = f" (and {len(handler.messages) - 1} more warnings)" if len(handler.messages) > 1 else ""
        raise KBError(f"mkdocs build failed: {first}{more}", code=1) from None
    finally:
        log.removeHandler(handler)


def drop_source_maps(site_dir: Path) -> list[str]:
    """Delete the theme's source maps (`*.map`, about 1 MB): browsers fetch them only with developer tools
    open, and the site ships no code of its own that needs them. Returns the deleted paths."""
    gone = []
    for path in sorted(site_dir.glob("assets/**/*.map")):
        path.unlink()
        gone.append(str(path.relative_to(site_dir)))
    return gone
