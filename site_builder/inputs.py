"""Optional inputs other tools write: GitHub metadata and reproduction results.

Reproduction records are validated with `kb.results.Reproduction`, the model the harness writes with.

Both are optional (the site builds without them) but, when present, must be well formed: a broken or
hand-edited file stops the build with one line naming the file and the field (exit 2, bad input), rather
than silently dropping a number from the site.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kb.errors import KBError
from kb.results import Reproduction, Sweep

META_PATH = "data/meta/github.json"
REPRODUCTIONS_DIR = "reproductions"
SWEEPS_DIR = "reproductions/sweeps"


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class RepoMeta(_Open):
    stars: int = Field(ge=0)
    last_commit: dt.date | None = None
    archived: bool = False
    fetched_at: dt.date


class GithubMeta(_Open):
    fetched: dt.date
    repos: dict[str, RepoMeta] = {}


def load_github_meta(root: Path) -> GithubMeta | None:
    path = root / META_PATH
    if not path.is_file():
        return None
    return _load(path, root, GithubMeta)


def load_reproductions(root: Path) -> dict[str, Reproduction]:
    """`reproductions/<paper-id>.json`, keyed by paper id (the file name)."""
    out: dict[str, Reproduction] = {}
    for path in sorted((root / REPRODUCTIONS_DIR).glob("*.json")):
        rep = _load(path, root, Reproduction)
        if rep.paper != path.stem:
            raise KBError(
                f"{_rel(path, root)}: paper is {rep.paper!r} but the file is named {path.stem!r}", code=2
            )
        out[path.stem] = rep
    return out


def load_sweeps(root: Path) -> dict[str, Sweep]:
    """`reproductions/sweeps/<name>.json` (`kb sweep --commit`), keyed by name (the file name)."""
    out: dict[str, Sweep] = {}
    for path in sorted((root / SWEEPS_DIR).glob("*.json")):
        sweep = _load(path, root, Sweep)
        if sweep.name != path.stem:
            raise KBError(
                f"{_rel(path, root)}: name is {sweep.name!r} but the file is named {path.stem!r}", code=2
            )
        out[path.stem] = sweep
    return out


def _load(path: Path, root: Path, model: type[BaseModel]) -> Any:
    rel = _rel(path, root)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise KBError(f"{rel}: cannot read: {exc}", code=2) from None
    except json.JSONDecodeError as exc:
        raise KBError(f"{rel}:{exc.lineno}: not valid JSON: {exc.msg}", code=2) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(file)"
        got = "" if err["type"] == "missing" else f" (got {json.dumps(err.get('input'))[:60]})"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise KBError(f"{rel}: {where}: {err['msg']}{got}{more}", code=2) from None


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)
