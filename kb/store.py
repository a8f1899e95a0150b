"""Load the knowledge base from disk: vocabulary, paper records and challenge notes.

Loading never raises for bad content; it returns `Problem`s that name file, line and field.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .schema import Paper
from .vocab import Vocabulary, VocabularyError, load_vocabulary
from .yamlio import Loaded, YamlError, parse_yaml


@dataclass(frozen=True, order=True)
class Problem:
    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return _one_line(f"{self.file}:{self.line}: {self.field or '(empty key)'}: {self.message}")


def _one_line(text: str) -> str:
    """Control characters (a newline in a YAML key, say) are shown escaped: one problem, one line."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m.group())[1:-1], text)


@dataclass
class Record:
    paper: Paper
    file: str  # relative, e.g. papers/wanda.yaml
    loaded: Loaded

    def line(self, *loc: str | int) -> int:
        return self.loaded.line_of(tuple(loc))


def record_json(rec: Record) -> dict[str, Any]:
    """A record as the JSON that `kb list --json`, `kb show --json` and the site's exports share."""
    data = rec.paper.model_dump(mode="json", exclude_none=True)
    impl = rec.paper.implementation
    data["reproduce"] = f"kb reproduce {rec.paper.id} --model tiny-llama" if impl else None
    return data


@dataclass
class KnowledgeBase:
    root: Path
    vocab: Vocabulary | None
    records: list[Record] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    challenges: dict[str, str] = field(default_factory=dict)  # id -> Markdown text
    stems: list[str] = field(default_factory=list)  # every papers/*.yaml, loadable or not
    unloadable: list[tuple[str, Loaded]] = field(default_factory=list)  # parsed, but not a valid Paper

    @property
    def papers(self) -> list[Paper]:
        return [r.paper for r in self.records]

    def get(self, paper_id: str) -> Record | None:
        return next((r for r in self.records if r.paper.id == paper_id), None)


def paper_files(root: Path) -> list[Path]:
    return sorted((root / "papers").glob("*.yaml"))


def load_kb(root: Path) -> KnowledgeBase:
    """Everything under `root`, with shape problems collected; cross-checks are in `kb.checks`."""
    try:
        vocab = load_vocabulary(root / "concepts")
    except VocabularyError as exc:
        where, _, line = exc.where.rpartition(":")
        kb = KnowledgeBase(root=root, vocab=None)
        kb.problems.append(Problem(where, int(line), "vocabulary", exc.message))
        return kb
    kb = KnowledgeBase(root=root, vocab=vocab)
    for path in paper_files(root):
        kb.stems.append(path.stem)
        record, problems = load_record(path, root)
        kb.problems.extend(problems)
        if isinstance(record, Record):
            kb.records.append(record)
        elif record is not None:
            kb.unloadable.append((_rel(path, root), record))
    for stray in sorted((root / "papers").iterdir()) if (root / "papers").is_dir() else []:
        if stray.suffix != ".yaml" and not stray.name.startswith("."):
            kb.problems.append(Problem(_rel(stray, root), 1, "file", "records must be named <id>.yaml"))
    for note in sorted((root / "challenge").glob("*.md")):
        try:
            kb.challenges[note.stem] = note.read_bytes().decode("utf-8").replace("\r\n", "\n")
        except UnicodeDecodeError:
            kb.problems.append(Problem(_rel(note, root), 1, "challenge", "not valid UTF-8"))
            kb.challenges[note.stem] = ""
    return kb


MODELINE = "# yaml-language-server: $schema=../schema/paper.schema.json"


def load_record(path: Path, root: Path) -> tuple[Record | Loaded | None, list[Problem]]:
    """One record; or, when the YAML parses but is not a valid Paper, the parsed data (so further
    checks can still run on it); or None. Plus the problems found either way."""
    rel = _rel(path, root)
    try:
        raw = path.read_bytes()
        loaded = parse_yaml(raw)
    except YamlError as exc:
        return None, [Problem(rel, exc.line, "yaml", exc.message)]
    except OSError as exc:
        return None, [Problem(rel, 1, "file", f"cannot read: {exc.strerror}")]
    first = raw.split(b"\n", 1)[0].rstrip(b"\r").removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    header = (
        []
        if first == MODELINE
        else [Problem(rel, 1, "modeline", f"the first line must be `{MODELINE}` (editor support)")]
    )
    if not isinstance(loaded.data, dict):
        kind = "empty" if loaded.data is None else type(loaded.data).__name__
        return None, [*header, Problem(rel, 1, "record", f"expected a mapping of fields, got {kind}")]
    try:
        paper = Paper.model_validate(loaded.data)
    except ValidationError as exc:
        return loaded, [*header, *(_problem_from_error(rel, loaded, err) for err in exc.errors())]
    return Record(paper=paper, file=rel, loaded=loaded), header


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return str(path)


# ---- turning pydantic's errors into one friendly line each -------------------------------------


def _problem_from_error(rel: str, loaded: Loaded, err: Any) -> Problem:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    # drop pydantic's union-branch labels like 'str' / 'list[...]'
    loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p in {"str", "dict", "list"})))
    dotted = _dotted(loc) or "record"
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        # a key that looks like a union-branch label ('str', 'dict', ...) was filtered out of `loc` above
        parent, name = (loc[:-1], loc[-1]) if loc else ((), err["loc"][-1] if err["loc"] else "?")
        allowed = _allowed_fields(parent)
        near = difflib.get_close_matches(str(name), allowed, n=1, cutoff=0.5)
        hint = (
            f" (did you mean {near[0]!r}?)"
            if near
            else (f" (allowed: {', '.join(allowed)})" if allowed else "")
        )
        msg = f"unknown field {name!r}{hint}"
    elif kind == "missing":
        msg = "required field is missing"
    elif kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        options = [o.strip().strip("'") for o in expected.replace(" or ", ",").split(",") if o.strip()]
        near = difflib.get_close_matches(str(err.get("input")), options, n=1, cutoff=0.5)
        msg = f"{err.get('input')!r} is not one of {', '.join(options)}" + (
            f" (did you mean {near[0]!r}?)" if near else ""
        )
    elif kind == "value_error":
        msg = msg.removeprefix("Value error, ")
    elif kind == "string_pattern_mismatch":
        msg = f"{err.get('input')!r} does not match the expected format {err['ctx']['pattern']}"
    return Problem(rel, loaded.line_of(loc), dotted, msg)


def _dotted(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _allowed_fields(parent: tuple[str | int, ...]) -> list[str]:
    """Field names allowed at `parent` in a Paper, for 'did you mean' hints."""
    from pydantic import BaseModel

    model: type[BaseModel] | None = Paper
    for part in parent:
        if isinstance(part, int) or model is None:
            continue
        info = model.model_fields.get(part)
        model = _model_in(info.annotation) if info else None
    return list(model.model_fields) if model is not None else []


def _model_in(annotation: Any) -> Any:
    from typing import get_args

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
