"""Evaluation protocols: the one a paper's headline numbers used (as data), and the one a result ran.

A perplexity means little without its protocol: which text and split, how long the windows are and how far
apart (stride), whether it is per token or per word, how many windows, and what calibrated the pruning. Two
numbers are comparable only when all of that agrees.

- `data/paper-protocols.yaml` holds, per runnable paper, the protocol of its official code (`Protocol`), with the
  line of code it was read from. `kb reproduce PAPER --model M --protocol paper` runs it and puts our number beside
  the record's `results:` rows that match (`matching_rows`: same model, setting, dataset, metric and method).
- Every `kb reproduce` result ran a protocol too: `ran_protocol` reads it off the record's dataset description
  (non-overlapping token windows of the evaluation part of the corpus), so old results carry it without a re-run.

Torch-free: the CLI, the site and `kb validate` use it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import KBError
from .paper_results import PaperResult, ResultSource, Setting
from .paths import repo_root
from .yamlio import YamlError, load_yaml

Length = Annotated[int, Field(ge=2, le=1_000_000)] | Literal["context"]  # "context": the model's own


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Calibration(_Strict):
    dataset: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    split: str = "train"
    samples: int = Field(ge=1, le=100_000)
    seqlen: Length


class Protocol(_Strict):
    """How a paper measured its headline perplexity (its official code's defaults)."""

    method: str = Field(pattern=r"^[a-z0-9]+(?:[-+.][a-z0-9]+)*$")  # the registered method the rows name
    setting: Setting  # the headline compression setting (a target of the method)
    dataset: Literal["wikitext2", "c4"]  # the evaluation text
    split: str = "test"
    window: Length  # tokens per window; the stride equals it (non-overlapping windows)
    perplexity: Literal["token"] = "token"  # exp(mean next-token NLL); word perplexity is lm-eval's wikitext
    windows: Literal["all"] = "all"  # every full window of the split
    calibration: Calibration
    source: ResultSource
    note: str | None = None


def protocols_file(root: Path | None = None) -> Path:
    return (root or repo_root()) / "data" / "paper-protocols.yaml"


def load_protocols(root: Path | None = None) -> dict[str, Protocol]:
    path = protocols_file(root)
    try:
        raw = load_yaml(path).data or {}
    except (OSError, YamlError) as exc:
        raise KBError(f"cannot read {path}: {getattr(exc, 'message', None) or exc}") from None
    if not isinstance(raw, dict):
        raise KBError(f"{path}: expected a mapping of paper id to protocol")
    out: dict[str, Protocol] = {}
    for paper, body in raw.items():
        try:
            out[str(paper)] = Protocol.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise KBError(f"{path}: {paper}.{where}: {first['msg']}") from None
    return out


def protocol_of(paper: str, root: Path | None = None) -> Protocol:
    known = load_protocols(root)
    if paper not in known:
        listed = ", ".join(sorted(known)) or "none"
        raise KBError(f"no paper protocol is recorded for {paper} (data/paper-protocols.yaml has: {listed}); "
                      "run it with our protocol (drop --protocol paper)")  # fmt: skip
    return known[paper]


def resolve(length: int | str, context: int | None) -> int:
    """A protocol length in tokens: "context" is the model's `max_position_embeddings`."""
    if length == "context":
        if context is None:
            raise KBError(
                "the paper's protocol uses the model's context length, and this model's config has none"
            )
        return context
    return int(length)


def model_key(name: str) -> str:
    """A model name reduced for matching: `meta-llama/Llama-2-7b-hf` and `LLaMA-2-7B` both give `llama-2-7b`."""
    base = name.rstrip("/").rsplit("/", 1)[-1].lower().replace("_", "-")
    return re.sub(r"-hf$", "", base)


def setting_of(target: dict[str, Any]) -> Setting:
    """The record's `Setting` for a run's target (`pattern` as (n, m) or "n:m")."""
    values: dict[str, Any] = {}
    if "pattern" in target and target["pattern"] is not None:
        pattern = target["pattern"]
        n, m = pattern.split(":") if isinstance(pattern, str) else pattern
        values["pattern"] = f"{int(n)}:{int(m)}"
        values["sparsity"] = int(n) / int(m)
    elif "sparsity" in target and target["sparsity"] is not None:
        values["sparsity"] = target["sparsity"]
    return Setting(**values)


def matching_rows(rows: list[PaperResult], *, method: str, setting: Setting, dataset: str,
                  model: str) -> list[PaperResult]:  # fmt: skip
    """The record's perplexity rows for `method` (or `dense`, with the empty setting) on `dataset` and `model`."""
    want = Setting() if method == "dense" else setting
    return [r for r in rows if r.metric == "perplexity" and r.dataset == dataset and r.method == method
            and r.setting.key() == want.key() and model_key(r.model) == model_key(model)]  # fmt: skip


def paper_rows(paper: str, root: Path | None = None) -> list[PaperResult]:
    """The validated `results:` rows of a paper's record (none when the record does not load)."""
    from .store import Record, load_record

    base = root or repo_root()
    record, _problems = load_record(base / "papers" / f"{paper}.yaml", base)
    return list(record.paper.results) if isinstance(record, Record) else []


def ran_protocol(dataset: Any) -> dict[str, Any]:
    """The protocol a `kb reproduce` result ran, from its `DatasetInfo` (what the board shows)."""
    ev, cal = dataset.evaluation, dataset.calibration
    return {
        "dataset": dataset.corpus, "split": "evaluation part", "window": ev.seqlen, "stride": ev.seqlen,
        "perplexity": "token", "windows": ev.windows,
        "calibration": {"dataset": dataset.corpus, "split": "calibration part", "samples": cal.samples,
                        "seqlen": cal.seqlen},
    }  # fmt: skip


def describe(protocol: dict[str, Any]) -> str:
    """One line: `wikitext2 test, 2048-token windows (stride 2048), token perplexity, 140 windows; calibration
    c4 train 128 x 2048`."""
    cal = protocol["calibration"]

    def tokens(n: Any) -> str:
        return "context-length" if n == "context" else f"{n}-token"

    windows = protocol.get("windows")
    count = f", {windows} windows" if windows not in (None, "all") else ", every window"
    stride = protocol.get("stride", protocol["window"])
    return (f"{protocol['dataset']} {protocol['split']}, {tokens(protocol['window'])} windows (stride "
            f"{'= window' if stride == protocol['window'] else stride}), {protocol['perplexity']} perplexity{count}; "
            f"calibration {cal['dataset']} {cal['split']} {cal['samples']} x {tokens(cal['seqlen'])}")  # fmt: skip


# ---- the result of `kb reproduce PAPER --protocol paper` ---------------------------------------------------
class ArmResult(_Strict):
    """Our perplexity of one arm (the dense model or the paper's method) under the protocol we ran."""

    method: str
    setting: Setting
    ppl: float
    nll: list[float]  # mean next-token NLL of each window, in order
    seconds: float  # pruning time (0 for the dense model)


class RowCheck(_Strict):
    """One matching row of the record beside our number."""

    method: str
    model: str
    seqlen: int | None
    value: float
    ours: float
    relative: float  # (ours - paper) / paper
    within: bool  # |relative| <= tolerance
    source: ResultSource


class ProtocolRun(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    paper: str
    model: str  # what was loaded (path or hub id)
    paper_model: str  # the record's model name the rows were matched against
    tolerance: float
    protocol: Protocol  # the paper's
    ran: dict[str, Any]  # what we ran (`describe` reads it)
    differences: list[str]  # where what we ran departs from the paper's protocol
    arms: list[ArmResult]
    rows: list[RowCheck]
    verdict: str
    matches: bool  # at least one row, every row within the tolerance
    versions: dict[str, str]
    machine: dict[str, Any]
    produced: str


def row_check(row: PaperResult, ours: float, tolerance: float) -> RowCheck:
    relative = (ours - row.value) / row.value
    return RowCheck(method=row.method, model=row.model, seqlen=row.seqlen, value=row.value, ours=ours,
                    relative=relative, within=abs(relative) <= tolerance, source=row.source)  # fmt: skip


def verdict_line(rows: list[RowCheck], tolerance: float, differences: list[str], what: str) -> str:
    if not rows:
        return f"no row of the record matches {what}: nothing to compare"
    parts = []
    for r in rows:
        rel = f"{r.relative:+.1%}"
        parts.append(f"{r.method} {'matches the paper within' if r.within else 'differs from the paper by'} "
                     f"{f'{tolerance:.0%} ({rel})' if r.within else f'{rel} (more than {tolerance:.0%})'}")  # fmt: skip
    text = "; ".join(parts)
    if differences:
        text += f"; the protocol differs from the paper's ({len(differences)}: see above)"
    return text
