"""Fetch one paper's metadata from the arXiv API (Atom) and turn it into a `Draft` for `kb new`.

Etiquette (arXiv terms of use): at most one request every 3 seconds from this process, one
connection, a descriptive User-Agent, and retries with growing pauses when the API answers 5xx/429
or an empty page (which it does sporadically). Only metadata is used (CC0); the record links to the
abstract page.

Settings from the environment:
  KB_ARXIV_API_URL       query endpoint (default https://export.arxiv.org/api/query)
  KB_ARXIV_MIN_INTERVAL  seconds between requests (default 3; tests shrink it)
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import KBError
from .http import MinIntervalLimiter, describe, env_float, retry_after_seconds, user_agent

if TYPE_CHECKING:
    import httpx

    from .scaffold import Draft

DEFAULT_API_URL = "https://export.arxiv.org/api/query"
DEFAULT_MIN_INTERVAL = 3.0
MAX_FEED_BYTES = 2 * 1024 * 1024
MAX_RETRY_AFTER = 60.0

_ATOM = "{http://www.w3.org/2005/Atom}"
_OPENSEARCH = "{http://a9.com/-/spec/opensearch/1.1/}"

# New-style identifiers (April 2007 on): YYMM.NNNN (to 2014) or YYMM.NNNNN, optional version.
_NEW_ID = re.compile(r"^(\d{2}(?:0[1-9]|1[0-2])\.\d{4,5})(v\d+)?$")
_OLD_ID = re.compile(r"^[a-z-]+(?:\.[A-Z]{2})?/\d{7}(v\d+)?$")
_PREFIXES = ("arxiv:", "https://arxiv.org/abs/", "http://arxiv.org/abs/")

# One limiter for the whole process: arXiv counts requests per client, not per call.
LIMITER = MinIntervalLimiter()


@dataclass(frozen=True)
class ArxivEntry:
    arxiv_id: str  # without version
    title: str  # white space collapsed
    authors: list[str]
    published: str  # YYYY-MM-DD of version 1
    abstract_url: str

    @property
    def year(self) -> int:
        return int(self.published[:4])


class FeedError(Exception):
    """The API answered with something that is not a usable Atom feed."""


def normalise_id(raw: str) -> str:
    """The versionless new-style id in `raw` (which may carry `arXiv:` or an abs URL), or KBError."""
    text = raw.strip()
    for prefix in _PREFIXES:
        if text.lower().startswith(prefix):
            text = text[len(prefix) :]
            break
    match = _NEW_ID.match(text)
    if match:
        return match.group(1)
    if _OLD_ID.match(text):
        raise KBError(
            f"old-style arXiv id {raw!r} is not supported by the record schema; fill the record by hand"
        )
    raise KBError(f"malformed arXiv id {raw!r}: expected YYMM.NNNNN, e.g. 2306.11695")


def _text(el: ET.Element | None) -> str:
    return " ".join((el.text or "").split()) if el is not None else ""


def _versionless(entry_id: str) -> str:
    tail = entry_id.rstrip("/").rsplit("/abs/", 1)[-1]
    return re.sub(r"v\d+$", "", tail)


def parse_feed(data: bytes, wanted: str) -> ArxivEntry | None:
    """The entry for `wanted` in an Atom feed, or None when the feed has no such entry.

    Raises KBError when arXiv answers with an error entry, FeedError when the bytes are not a feed.
    """
    if len(data) > MAX_FEED_BYTES:
        raise FeedError(f"response is larger than {MAX_FEED_BYTES} bytes")
    # The API never sends a DOCTYPE; refusing one rules out entity-expansion tricks before parsing.
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise FeedError("response contains a DOCTYPE or entity declaration")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise FeedError(f"response is not valid XML ({exc})") from None
    if root.tag != f"{_ATOM}feed":
        raise FeedError("response is not an Atom feed")
    for entry in root.findall(f"{_ATOM}entry"):
        entry_id = _text(entry.find(f"{_ATOM}id"))
        title = _text(entry.find(f"{_ATOM}title"))
        if "/api/errors" in entry_id or title == "Error":
            reason = _text(entry.find(f"{_ATOM}summary")) or "unknown error"
            raise KBError(f"arXiv rejected id {wanted!r}: {reason}")
        if _versionless(entry_id) != wanted:
            continue
        authors = [_text(a.find(f"{_ATOM}name")) for a in entry.findall(f"{_ATOM}author")]
        authors = [a for a in authors if a]
        published = _text(entry.find(f"{_ATOM}published"))[:10]
        if not title or not authors or not re.match(r"^\d{4}-\d{2}-\d{2}$", published):
            raise FeedError(f"entry for {wanted} lacks a title, authors or a publication date")
        return ArxivEntry(
            arxiv_id=wanted,
            title=title,
            authors=authors,
            published=published,
            abstract_url=f"https://arxiv.org/abs/{wanted}",
        )
    return None


def fetch_entry(
    arxiv_id: str,
    *,
    client: httpx.Client,
    api_url: str,
    min_interval: float = DEFAULT_MIN_INTERVAL,
    retries: int = 3,
    limiter: MinIntervalLimiter = LIMITER,
) -> ArxivEntry:
    """One entry by versionless id. Retries 5xx, 429, unreadable and empty pages; KBError otherwise."""
    import httpx

    params = {"id_list": arxiv_id, "max_results": "1"}
    pause = min_interval
    last_problem = ""
    for attempt in range(retries + 1):
        limiter.wait(pause)
        hint: float | None = None
        try:
            response = client.get(api_url, params=params)
        except httpx.TimeoutException:
            last_problem = "the request timed out"
        except httpx.TransportError as exc:
            raise KBError(f"cannot reach the arXiv API at {api_url}: {describe(exc)}") from None
        else:
            status = response.status_code
            if status == 429 or status >= 500:
                last_problem = f"HTTP {status}"
                hint = retry_after_seconds(response.headers)
            elif status != 200:
                # arXiv explains bad queries in an Atom error entry; use it when present.
                try:
                    parse_feed(response.content, arxiv_id)
                except FeedError:
                    pass
                raise KBError(f"arXiv API answered HTTP {status} for {arxiv_id}")
            else:
                try:
                    entry = parse_feed(response.content, arxiv_id)
                except FeedError as exc:
                    last_problem = str(exc)
                else:
                    if entry is not None:
                        return entry
                    last_problem = "empty result"
        # The pause before retry k is interval * 2**(k-1) (3, 6, 12 s), or a longer Retry-After (capped).
        pause = max(min_interval * (2**attempt), min(hint or 0.0, MAX_RETRY_AFTER))
    if last_problem == "empty result":
        raise KBError(f"arXiv has no paper {arxiv_id} (empty result after {retries + 1} tries)")
    raise KBError(f"arXiv API failed for {arxiv_id} after {retries + 1} tries: {last_problem}")


def make_client() -> httpx.Client:
    """A client that keeps to one connection and names itself."""
    import httpx

    return httpx.Client(
        headers={"User-Agent": user_agent("arXiv metadata import"), "Accept": "application/atom+xml"},
        timeout=httpx.Timeout(30.0, connect=10.0),
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        follow_redirects=True,
    )


def draft_from_arxiv(raw_id: str, *, client: httpx.Client | None = None) -> Draft:
    """A `Draft` (title, authors, year, arxiv id, abstract link) for `kb new --arxiv`.

    The id is checked before any request; every failure is a one-line KBError (exit 2).
    """
    from .scaffold import Draft

    arxiv_id = normalise_id(raw_id)
    api_url = os.environ.get("KB_ARXIV_API_URL", "").strip() or DEFAULT_API_URL
    if not api_url.startswith(("http://", "https://")):
        raise KBError(f"KB_ARXIV_API_URL must be an http(s) URL, got {api_url!r}")
    interval = env_float("KB_ARXIV_MIN_INTERVAL", DEFAULT_MIN_INTERVAL)
    own = client is None
    client = client or make_client()
    try:
        entry = fetch_entry(arxiv_id, client=client, api_url=api_url, min_interval=interval)
    finally:
        if own:
            client.close()
    return Draft(
        title=entry.title,
        authors=entry.authors,
        year=entry.year,
        arxiv=entry.arxiv_id,
        paper_url=entry.abstract_url,
    )
