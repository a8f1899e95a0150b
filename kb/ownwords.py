"""Own words: what counts as copying, in one place.

A take-away, a note, a key finding or a challenge note must not share `RUN` (eight) or more words in a
row with the documents it was written from: the seed documents the project started from, and the
official READMEs of the repositories a record cites. Text is compared as lower-case word runs with
links removed (`words`, `runs`).

The READMEs are not kept in the repository (no upstream text is committed). What is kept is a
fingerprint file, `data/readme-shingles.json`, built by `scripts/readme_shingles.py`: for each cited
README (repository, path and commit) only salted hashes of its eight-word runs (`run_hash`). The test
`tests/core/test_own_words.py` hashes each record's runs the same way and looks them up.

Which READMEs a record cites (`cited_repos`, `cited_readmes`): those of the repositories named by its
`repo:` field and its official code links, and any README on github.com that its sources link to
(record sources, finding sources, the origin's source and the results' sources), whoever owns it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .schema import Paper

RUN = 8  # words in a row that count as copying
SALT = "pruning-kb/readme-shingles/v1"  # mixed into every hash, so the file is no plain lookup table
HASH_HEX = 16  # hex digits kept of each sha256
FINGERPRINTS = Path("data/readme-shingles.json")  # relative to the knowledge base root

_URL = re.compile(r"https?://\S+")


def words(text: str) -> list[str]:
    """Lower-case words of `text`, links removed: the unit every comparison counts in."""
    return re.findall(r"\w+", _URL.sub(" ", text).lower())


def runs(ws: list[str], n: int = RUN) -> set[tuple[str, ...]]:
    """Every run of `n` consecutive words."""
    return {tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)}


def run_hash(run: tuple[str, ...], salt: str = SALT) -> str:
    """The salted fingerprint of one word run: the first `HASH_HEX` hex digits of a sha256."""
    return hashlib.sha256(f"{salt}\n{' '.join(run)}".encode()).hexdigest()[:HASH_HEX]


def text_hashes(text: str, salt: str = SALT, n: int = RUN) -> set[str]:
    """The fingerprints of every `n`-word run of `text` (what the fingerprint file stores per README)."""
    return {run_hash(r, salt) for r in runs(words(text), n)}


def copied_runs(text: str, seed_runs: set[tuple[str, ...]], exempt: set[tuple[str, ...]]) -> list[str]:
    """The runs of `text` that also occur in a plain-text source, except those inside an exempt phrase."""
    return sorted(" ".join(r) for r in runs(words(text)) & seed_runs - exempt)


def copied_hashed_runs(
    text: str, hashes: set[str] | frozenset[str], exempt: set[tuple[str, ...]], salt: str = SALT
) -> list[str]:
    """The runs of `text` whose fingerprint is in `hashes` (a README's), except exempt ones."""
    return sorted(" ".join(r) for r in runs(words(text)) - exempt if run_hash(r, salt) in hashes)


# ---- which READMEs a record cites -------------------------------------------------------------

_GITHUB = re.compile(
    r"^https?://(?:www\.)?github\.com/(?P<owner>[A-Za-z0-9][A-Za-z0-9-]*)/(?P<name>[A-Za-z0-9_.-]+?)(?:\.git)?"
    r"(?:/(?P<kind>blob|tree|raw)/(?P<ref>[^/\s?#]+)(?:/(?P<path>[^\s?#]*))?|/[^\s]*)?/?(?:[?#]\S*)?$"
)
_README = re.compile(r"^readme(?:\.[a-z]+)?$", re.I)


@dataclass(frozen=True, order=True)
class ReadmeRef:
    """A README a record points at: repository (`owner/name`), path in it, and the commit or branch
    the record names (None: the record names none; the builder takes the default branch's head)."""

    repo: str
    path: str
    ref: str | None


def parse_github(url: str) -> tuple[str, str | None, str | None, str | None] | None:
    """`(owner/name, blob|tree|raw|None, ref, path)` of a github.com link, or None for other hosts."""
    m = _GITHUB.match(url.strip())
    if not m:
        return None
    return f"{m['owner']}/{m['name']}", m["kind"], m["ref"], (m["path"] or "").strip("/") or None


def _source_urls(p: Paper) -> Iterator[str]:
    yield from (s.url for s in p.sources)
    yield from (f.source.url for f in p.findings)
    yield from (r.source.url for r in p.results)
    if p.origin is not None and p.origin.source is not None:
        yield p.origin.source.url


def _code_urls(p: Paper) -> Iterator[str]:
    yield from (c.url for c in p.links.code if c.official)


def _official_repos(p: Paper) -> set[str]:
    repos = {p.repo.lower()} if p.repo else set()
    repos |= {gh[0].lower() for url in _code_urls(p) if (gh := parse_github(url)) is not None}
    return repos


def _is_readme(path: str | None) -> bool:
    return bool(path) and bool(_README.match(str(path).rsplit("/", 1)[-1]))


def cited_repos(p: Paper) -> set[str]:
    """The repositories (`owner/name`, lower case) whose READMEs a record's text is checked against:
    its own (`repo:`, official code links) and those of any README page its sources link to."""
    repos = _official_repos(p)
    for url in _source_urls(p):
        if (gh := parse_github(url)) is not None and gh[1] in ("blob", "raw") and _is_readme(gh[3]):
            repos.add(gh[0].lower())
    return repos


def cited_readmes(p: Paper) -> set[ReadmeRef]:
    """The README files to fingerprint for one record: each README page its sources link at a commit;
    the README of a folder its official code links point into (`/tree/<ref>/<folder>`), which then
    stands for that repository's; and, for every other official repository (`repo:`, official code
    links), the top-level README at the first commit the record's sources cite in it (or at no named
    commit when they cite none)."""
    found: set[ReadmeRef] = set()
    commits: dict[str, str] = {}  # repo -> a commit the record cites for it
    for url in _source_urls(p):
        if (gh := parse_github(url)) is None:
            continue
        repo, kind, ref, path = gh
        if kind in ("blob", "raw") and ref:
            commits.setdefault(repo.lower(), ref)
            if path and _is_readme(path):
                found.add(ReadmeRef(repo, path, ref))
    covered = {r.repo.lower() for r in found if "/" not in r.path}  # top-level README already in
    for url in _code_urls(p):
        if (gh := parse_github(url)) is not None and gh[1] == "tree" and gh[3]:
            found.add(ReadmeRef(gh[0], f"{gh[3]}/README.md", gh[2]))
            covered.add(gh[0].lower())  # the folder's README stands for the repository's
    spelled = {x.lower(): x for x in _all_repos(p)}
    for repo in _official_repos(p) - covered:
        found.add(ReadmeRef(spelled.get(repo, repo), "README.md", commits.get(repo)))
    return found


def _all_repos(p: Paper) -> Iterator[str]:
    if p.repo:
        yield p.repo
    for url in (*_code_urls(p), *_source_urls(p)):
        if (gh := parse_github(url)) is not None:
            yield gh[0]


# ---- the fingerprint file ---------------------------------------------------------------------


@dataclass(frozen=True)
class Fingerprint:
    """The hashed runs of one README at one commit."""

    repo: str
    path: str
    commit: str
    hashes: frozenset[str]


@dataclass(frozen=True)
class Fingerprints:
    salt: str
    run: int
    readmes: tuple[Fingerprint, ...]

    def for_repos(self, repos: Iterable[str]) -> frozenset[str]:
        """Every hash of every fingerprinted README of these repositories (any path, any commit)."""
        wanted = {r.lower() for r in repos}
        return frozenset().union(*(f.hashes for f in self.readmes if f.repo.lower() in wanted))

    def repos(self) -> set[str]:
        return {f.repo.lower() for f in self.readmes}


def load_fingerprints(path: Path) -> Fingerprints:
    """Read the fingerprint file (see `scripts/readme_shingles.py` for how it is built)."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    width = int(data.get("hash_hex", HASH_HEX))
    readmes = []
    for entry in data["readmes"]:
        packed: str = entry["hashes"]
        hashes = frozenset(packed[i : i + width] for i in range(0, len(packed), width))
        readmes.append(Fingerprint(entry["repo"], entry["path"], entry["commit"], hashes))
    return Fingerprints(salt=data["salt"], run=int(data["run"]), readmes=tuple(readmes))
