"""Optional inputs other tools write: GitHub metadata and reproduction results.

Both are optional (the site builds without them) but, when present, must be well formed: a broken
file stops the build with one line naming it, rather than silently dropping a number from the site.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from kb.errors import KBError

META_PATH = "data/meta/github.json"
REPRODUCTIONS_DIR = "reproductions"


def _number(value: Any) -> Any:
    """JSON has no inf/nan; the harness writes them as strings. Keep them as floats here."""
    if isinstance(value, str) and value.strip().lower() in {"inf", "-inf", "nan", "infinity", "-infinity"}:
        return float(value)
    return value


Number = Annotated[float, BeforeValidator(_number)]


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


class MethodResult(_Open):
    method: str
    sparsity_target: Number
    sparsity_actual: Number
    ppl: Number
    prune_seconds: Number | None = None


class Claim(_Open):
    statement: str
    holds: bool


class TokenSplit(_Open):
    tokens: int = Field(ge=0)


class DatasetInfo(_Open):
    """What `kb reproduce` writes: the corpus and the calibration/evaluation token counts."""

    corpus: str
    calibration: TokenSplit
    evaluation: TokenSplit

    def __str__(self) -> str:
        return (f"{self.corpus} (calibration {self.calibration.tokens:,} tokens, "
                f"evaluation {self.evaluation.tokens:,} tokens)")


class Reproduction(_Open):
    paper: str
    model: str
    dataset: str | DatasetInfo
    config: dict[str, Any] = {}
    versions: dict[str, str] = {}
    total_seconds: Number | None = None
    results: list[MethodResult] = Field(min_length=1)
    claim: Claim | None = None


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
            raise KBError(f"{_rel(path, root)}: paper is {rep.paper!r} but the file is named {path.stem!r}", code=1)
        out[path.stem] = rep
    return out


def _load(path: Path, root: Path, model: type[BaseModel]) -> Any:
    rel = _rel(path, root)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise KBError(f"{rel}: cannot read: {exc}", code=1) from None
    except json.JSONDecodeError as exc:
        raise KBError(f"{rel}:{exc.lineno}: not valid JSON: {exc.msg}", code=1) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(file)"
        raise KBError(f"{rel}: {where}: {err['msg']}", code=1) from None


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)
