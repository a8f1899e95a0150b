"""The record schema: one `Paper` per `papers/<id>.yaml`. Models only; no I/O.

Shape is checked here (unknown keys are forbidden everywhere); whether tag values and qualifiers
belong to the vocabulary is checked against `concepts/` by `kb.checks`, which knows where each value
sits in the file.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from .paper_results import PaperResult

SCHEMA_VERSION = 1
ID_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
FIRST_YEAR = 1980


def _check_url(url: str) -> str:
    if any(ch.isspace() for ch in url):
        raise ValueError("URL contains white space")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"only http(s) links are allowed, got scheme {parts.scheme or '(none)'!r}")
    if not parts.hostname or "." not in parts.hostname:
        raise ValueError("URL has no valid host")
    return url


def _check_year(year: int) -> int:
    last = _dt.date.today().year + 1
    if not FIRST_YEAR <= year <= last:
        raise ValueError(f"year {year} is outside {FIRST_YEAR}..{last}")
    return year


def _strip(text: Any) -> Any:
    return text.strip() if isinstance(text, str) else text


def _as_list(value: Any) -> Any:
    """A single tag may be written without brackets."""
    return [value] if isinstance(value, (str, dict)) else value


Url = Annotated[str, Field(max_length=500), AfterValidator(_check_url)]
Year = Annotated[int, AfterValidator(_check_year)]
Line = Annotated[str, BeforeValidator(_strip), Field(min_length=1, max_length=300, pattern=r"^[^\n]*$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class Venue(_Strict):
    """Where the paper appeared (or was submitted). `year` is the venue's year."""

    name: Annotated[str, Field(min_length=2, max_length=60)]
    year: Year
    kind: Literal["conference", "workshop", "journal", "preprint", "under-review"]
    track: Annotated[str, Field(max_length=60)] | None = None  # e.g. "Findings", "Oral"


class EarlierVersion(_Strict):
    """A title (and venue status) the paper carried before, e.g. its arXiv title before a journal
    renamed it. Shown on the paper's page and kept in the search index and `papers.json`."""

    title: Line
    venue: Venue | None = None  # the status it had under that title, e.g. an arXiv preprint
    note: Annotated[str, Field(min_length=3, max_length=200)] | None = None


SourceNumbers = list[
    Annotated[
        str,
        BeforeValidator(lambda v: str(v) if isinstance(v, (int, float)) else v),
        Field(min_length=1, max_length=30),
    ]
]


class Source(_Strict):
    """Where a fact comes from: a primary page (official repository file, proceedings or OpenReview
    page, arXiv abstract) and where in it. `supports` names the record fields it backs (`venue`,
    `identifiers`, `identifiers.arxiv`, `title`, `earlier_versions[0]`, ...); `numbers` lists the
    numbers of the take-away or notes it backs, written as they appear there (`6.51`, `2.1x`, `25%`)."""

    url: Url
    locator: Annotated[str, BeforeValidator(_strip), Field(min_length=3, max_length=200, pattern=r"^[^\n]*$")]
    supports: list[Annotated[str, Field(min_length=1, max_length=80)]] = []
    numbers: SourceNumbers = []

    @model_validator(mode="after")
    def _backs_something(self) -> Source:
        if not self.supports and not self.numbers:
            raise ValueError("a source must list the fields it supports or the numbers it backs")
        return self


Slug = Annotated[str, Field(pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$", max_length=40)]


class InlineSource(_Strict):
    """The page one fact comes from, written next to the fact: a primary page and where in it, plus
    the numbers of that fact it backs (as written there)."""

    url: Url
    locator: Annotated[str, BeforeValidator(_strip), Field(min_length=3, max_length=200, pattern=r"^[^\n]*$")]
    numbers: SourceNumbers = []


OriginKind = Literal["industry", "academia", "mixed", "unknown"]
ORIGIN_KINDS: tuple[str, ...] = get_args(OriginKind)


class Origin(_Strict):
    """Where the authors work, as the paper's first page or official repository says: the
    affiliations (organisation names, most authors first) and whether they are companies, universities
    and public institutes, or both. Sourced inline (`source`) or through `sources[].supports: [origin]`.
    `unknown` (no affiliations) is for a paper whose authors are not named anywhere readable, such as an
    anonymous submission: better no origin than a guessed one."""

    kind: OriginKind
    affiliations: Annotated[
        list[Annotated[str, BeforeValidator(_strip), Field(min_length=2, max_length=100)]],
        Field(max_length=20),
    ] = []
    source: InlineSource | None = None

    @model_validator(mode="after")
    def _affiliations_match_kind(self) -> Origin:
        if self.kind == "unknown" and self.affiliations:
            raise ValueError("an unknown origin lists no affiliations: name the kind they show, or drop them")
        if self.kind != "unknown" and not self.affiliations:
            raise ValueError(f"an origin of kind {self.kind} needs the affiliations that show it")
        return self


class Finding(_Strict):
    """One key experimental conclusion of the paper, in our own words: a single claim, where the paper
    shows it (`source`: table, figure or section and the page), an optional theme from
    `concepts/theme.yaml`, optionally the runnable paper whose reproduction tests it (`tested_by`) and
    the `key` of the entry in the record's `results:` that holds the number the claim quotes (`result`)."""

    claim: Annotated[str, BeforeValidator(_strip), Field(min_length=20, max_length=320, pattern=r"^[^\n]*$")]
    theme: Annotated[str, Field(min_length=1, max_length=40)] | None = None  # checked by kb.checks
    source: InlineSource
    tested_by: Slug | None = None
    result: Slug | None = None  # the `key` of a `results:` entry whose value the claim quotes


class Identifiers(_Strict):
    arxiv: Annotated[str, Field(pattern=r"^\d{4}\.\d{4,5}$")] | None = None  # no version suffix
    openreview: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{6,20}$")] | None = None
    acl: Annotated[str, Field(pattern=r"^\d{4}\.[a-z0-9-]+\.\d+$")] | None = None
    doi: Annotated[str, Field(pattern=r"^10\.\d{4,9}/\S+$")] | None = None

    @model_validator(mode="after")
    def _at_least_one(self) -> Identifiers:
        if not any((self.arxiv, self.openreview, self.acl, self.doi)):
            raise ValueError("give at least one of arxiv, openreview, acl, doi")
        return self


class CodeLink(_Strict):
    url: Url
    official: bool
    framework: Literal["pytorch", "jax", "tensorflow", "cuda", "c++", "other"] = "pytorch"
    note: Annotated[str, Field(max_length=120)] | None = None


class Links(_Strict):
    paper: Url
    code: list[CodeLink] = []
    blog: list[Url] = []
    reviews: list[Url] = []
    summary: list[Url] = []
    discussion: list[Url] = []
    models: list[Url] = []


class TagEntry(BaseModel):
    """One value on an axis, plus its qualifiers written as sibling keys:
    `sparsity`, or `{value: sparsity, scope: layer}`, or `{value: small, size: 50K samples}`."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[
        str, Annotated[str, Field(max_length=120)] | list[Annotated[str, Field(max_length=60)]]
    ]

    value: Annotated[str, Field(min_length=1, max_length=60)]

    @model_validator(mode="before")
    @classmethod
    def _from_scalar(cls, data: Any) -> Any:
        return {"value": data} if isinstance(data, str) else data

    @property
    def qualifiers(self) -> dict[str, str | list[str]]:
        return dict(self.__pydantic_extra__ or {})


TagList = Annotated[list[TagEntry], BeforeValidator(_as_list), Field(min_length=1, max_length=8)]


class Tags(_Strict):
    type: TagList
    criteria: TagList
    budget: TagList
    data: TagList
    retrain: TagList
    weight: TagList


class Paper(_Strict):
    """A catalogue record. Field order here is the order of the template and of the site."""

    id: Annotated[str, Field(pattern=ID_PATTERN, max_length=40)]
    title: Line
    short_name: Annotated[str, Field(min_length=1, max_length=40)] | None = None
    authors: Annotated[
        list[Annotated[str, Field(min_length=2, max_length=80)]], Field(min_length=1, max_length=200)
    ]
    origin: Origin | None = None  # `kb validate` asks for it
    year: Year  # first public appearance (arXiv or venue, whichever came first)
    venue: Venue
    earlier_versions: list[EarlierVersion] = []  # oldest first
    scope: Literal[
        "weight-pruning",
        "structured-pruning",
        "depth-pruning",
        "kv-cache",
        "system",
        "quantization",
        "analysis",
    ]
    identifiers: Identifiers
    links: Links
    repo: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")] | None = None
    tags: Tags
    # Deployable forms from `concepts/form.yaml`, most deployable first; `kb validate` asks for them.
    form: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=40)]],
        BeforeValidator(_as_list),
        Field(max_length=7),
    ] = []
    takeaway: Annotated[str, BeforeValidator(_strip), Field(min_length=40, max_length=700)]
    findings: Annotated[list[Finding], Field(max_length=5)] = []  # 1-5; `kb validate` asks for them
    notes: Annotated[str, BeforeValidator(_strip), Field(max_length=2000)] | None = None
    related: list[Annotated[str, Field(pattern=ID_PATTERN)]] = []
    implementation: Annotated[str, Field(pattern=r"^reference_impls/[a-z0-9_/]+\.py$")] | None = None
    unverified: dict[str, Annotated[str, Field(min_length=3, max_length=300)]] = {}
    sources: list[Source] = []
    results: list[PaperResult] = []  # paper-reported numbers (`kb.paper_results`); last in the file


def sentence_count(text: str) -> int:
    """Rough sentence count for the take-away limit (abbreviations like 'e.g.' do not split)."""
    cleaned = re.sub(r"\b(?:e\.g|i\.e|et al|vs|cf|approx)\.", "", text)
    cleaned = re.sub(r"\d\.\d", "0", cleaned)
    return len([s for s in re.split(r"[.!?]+(?:\s|$)", cleaned) if s.strip()])
