"""The link checker behind `kb check-links`: every URL in the records gets a verdict.

Verdicts:
  ok         the server answered 2xx (after at most `max_redirects` redirects)
  broken     404 or 410, a host name that does not exist, a redirect loop, too many redirects
  transient  timeout, connection refused or reset, 5xx or 429 after retries, 401/403/999 (access
             denied, usually bot protection), any other answer we cannot call definitive

Only `broken` is meant to fail a build; transient problems are reported but never fail it.

Politeness: a global limit on concurrent requests plus a per-host limit, a GET for the first KiB
only (`Range`), which avoids the false 403s many publishers send to HEAD, retries with
exponential backoff and jitter, and `Retry-After` honoured up to a cap. Redirects are followed by
hand so that loops are detected and every hop passes through the per-host limit.

The exclusion file (`links-exclude.yaml`) lists URL patterns (Python regular expressions, matched
with `re.search`), each with the reason it is excluded:

    exclude:
      - pattern: '^https://www\\.linkedin\\.com/'
        reason: LinkedIn answers HTTP 999 to every automated client

Results that are `ok` are cached (`LinkCache`) for a time-to-live, so repeated runs are fast;
problems are always checked again.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urljoin, urlsplit

from .errors import KBError
from .fsutil import write_text_atomic
from .http import backoff_delay, describe, retry_after_seconds
from .yamlio import YamlError, parse_yaml

if TYPE_CHECKING:
    import httpx

    from .store import Record

OK, BROKEN, TRANSIENT = "ok", "broken", "transient"
_REDIRECTS = {301, 302, 303, 307, 308}
_DENIED = {401, 403, 999}  # 999: LinkedIn's answer to bots
# getaddrinfo codes that mean "this name does not exist" (not "the resolver is unavailable").
_NO_SUCH_HOST = {getattr(socket, n) for n in ("EAI_NONAME", "EAI_NODATA") if hasattr(socket, n)}
_T = TypeVar("_T")


@dataclass(frozen=True)
class Settings:
    concurrency: int = 16  # requests in flight, all hosts together
    per_host: int = 2  # requests in flight to one host
    timeout: float = 15.0  # seconds, per request (connect, read, write, pool each)
    retries: int = 2  # extra tries for timeouts, resets, 5xx and 429
    backoff: float = 1.0  # base of the exponential backoff, seconds
    backoff_cap: float = 30.0
    retry_after_cap: float = 60.0  # never wait longer than this for one Retry-After
    max_redirects: int = 10
    total_timeout: float = 600.0  # the whole run; unfinished URLs become `transient`
    range_bytes: int = 1024


@dataclass(frozen=True)
class Result:
    url: str
    verdict: str
    status_code: int | None
    detail: str = ""


@dataclass(frozen=True)
class Target:
    """One URL as it appears in one record."""

    url: str
    record: str  # paper id
    file: str  # papers/<id>.yaml
    line: int
    field: str  # e.g. links.code[0].url


# ---- where the URLs come from ------------------------------------------------------------------


def record_targets(rec: Record) -> list[Target]:
    links = rec.paper.links
    found: list[tuple[str, tuple[str | int, ...]]] = [(links.paper, ("links", "paper"))]
    found += [(c.url, ("links", "code", i, "url")) for i, c in enumerate(links.code)]
    for kind in ("blog", "reviews", "summary", "discussion", "models"):
        found += [(u, ("links", kind, i)) for i, u in enumerate(getattr(links, kind))]
    out = []
    for url, loc in found:
        dotted = ".".join(f"[{p}]" if isinstance(p, int) else p for p in loc).replace(".[", "[")
        out.append(Target(url=url, record=rec.paper.id, file=rec.file, line=rec.line(*loc), field=dotted))
    return out


def changed_paper_files(root: Path, base: str) -> set[str]:
    """Relative paths `papers/<id>.yaml` that differ from the merge base of `base` and HEAD,
    counting uncommitted and untracked files too (what a PR, or a local branch, changes)."""

    def git(*argv: str) -> str:
        try:
            done = subprocess.run(
                ["git", *argv], cwd=root, capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise KBError(f"cannot run git: {exc}") from None
        if done.returncode != 0:
            first = (done.stderr.strip().splitlines() or ["git failed"])[0]
            raise KBError(f"git {argv[0]} failed for base {base!r}: {first}")
        return done.stdout

    if not base or base.startswith("-"):
        raise KBError(f"--base must name a git revision, got {base!r}")
    merge_base = git("merge-base", base, "HEAD").strip()
    # --relative: paths relative to the knowledge base even when it sits below the git top level.
    names = git("diff", "--name-only", "--relative", "--no-renames", merge_base, "--", "papers/").splitlines()
    names += git("ls-files", "--others", "--exclude-standard", "--", "papers/").splitlines()
    return {n.strip() for n in names if n.strip().endswith(".yaml")}


# ---- exclusions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exclusion:
    pattern: re.Pattern[str]
    reason: str


def load_exclusions(path: Path) -> list[Exclusion]:
    """The patterns in `path`; a missing file means none. Bad entries are a one-line KBError."""
    if not path.exists():
        return []
    name = path.name
    try:
        loaded = parse_yaml(path.read_bytes())
    except YamlError as exc:
        raise KBError(f"{name}:{exc.line}: {exc.message}") from None
    data = loaded.data or {}
    entries = data.get("exclude") if isinstance(data, dict) else None
    if not isinstance(data, dict) or set(data) - {"exclude"} or not isinstance(entries, list):
        raise KBError(f"{name}:1: expected one key `exclude` holding a list of {{pattern, reason}}")
    out = []
    for i, entry in enumerate(entries):
        line = loaded.line_of(("exclude", i))
        if not isinstance(entry, dict) or set(entry) != {"pattern", "reason"}:
            raise KBError(f"{name}:{line}: each exclusion needs exactly `pattern` and `reason`")
        pattern, reason = entry["pattern"], entry["reason"]
        if not isinstance(reason, str) or len(reason.strip()) < 5:
            raise KBError(f"{name}:{line}: give a reason (a few words) for excluding {pattern!r}")
        try:
            out.append(Exclusion(re.compile(str(pattern)), reason.strip()))
        except re.error as exc:
            raise KBError(f"{name}:{line}: bad pattern {pattern!r}: {exc}") from None
    return out


def excluded_by(url: str, exclusions: Iterable[Exclusion]) -> Exclusion | None:
    return next((e for e in exclusions if e.pattern.search(url)), None)


# ---- the result cache ----------------------------------------------------------------------------


class LinkCache:
    """`ok` verdicts with the time they were found, in one JSON file:

        {"version": 1, "results": {"<url>": {"verdict": "ok", "status_code": 200,
                                             "detail": "", "checked_at": <unix seconds>}}}

    Entries older than `ttl` seconds are ignored and dropped on save. An unreadable file is treated
    as empty (it is only a cache).
    """

    VERSION = 1

    def __init__(self, path: Path | None, ttl: float, now: Callable[[], float] = time.time) -> None:
        self.path, self.ttl, self.now = path, ttl, now
        self.entries: dict[str, dict[str, Any]] = {}
        if path is not None and ttl > 0 and path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if data.get("version") == self.VERSION and isinstance(data.get("results"), dict):
                    self.entries = {u: e for u, e in data["results"].items() if isinstance(e, dict)}
            except (OSError, ValueError, AttributeError):
                self.entries = {}

    def _fresh(self, entry: dict[str, Any]) -> bool:
        checked = entry.get("checked_at")
        return isinstance(checked, (int, float)) and 0 <= self.now() - checked < self.ttl

    def get(self, url: str) -> Result | None:
        entry = self.entries.get(url)
        if entry is None or self.ttl <= 0 or not self._fresh(entry) or entry.get("verdict") != OK:
            return None
        return Result(url, OK, entry.get("status_code"), entry.get("detail") or "")

    def put(self, result: Result) -> None:
        if result.verdict == OK:
            self.entries[result.url] = {
                "verdict": OK,
                "status_code": result.status_code,
                "detail": result.detail,
                "checked_at": self.now(),
            }
        else:
            self.entries.pop(result.url, None)

    def save(self) -> None:
        if self.path is None or self.ttl <= 0:
            return
        fresh = {u: e for u, e in sorted(self.entries.items()) if self._fresh(e)}
        write_text_atomic(self.path, json.dumps({"version": self.VERSION, "results": fresh}, indent=1) + "\n")


# ---- checking ------------------------------------------------------------------------------------


class Gate:
    """A global limit and a per-host limit on requests in flight."""

    def __init__(self, total: int, per_host: int) -> None:
        self._total = asyncio.Semaphore(max(1, total))
        self._per_host = max(1, per_host)
        self._hosts: dict[str, asyncio.Semaphore] = {}

    def host(self, name: str) -> asyncio.Semaphore:
        if name not in self._hosts:
            self._hosts[name] = asyncio.Semaphore(self._per_host)
        return self._hosts[name]

    async def __call__(self, host: str, fn: Callable[[], Awaitable[_T]]) -> _T:
        async with self.host(host), self._total:
            return await fn()


@dataclass
class _Pass:
    """The outcome of following one URL once: final, or worth another try."""

    result: Result
    retry: bool = False
    retry_after: float | None = None


def _no_such_host(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, socket.gaierror) and seen.errno in _NO_SUCH_HOST:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _classify(url: str, status: int, headers: Mapping[str, str], final_url: str, hops: int) -> _Pass:
    moved = f"redirects to {final_url}" if hops else ""
    if 200 <= status < 300:
        return _Pass(Result(url, OK, status, moved))
    if status in (404, 410):
        return _Pass(Result(url, BROKEN, status, f"HTTP {status}" + (f" at {final_url}" if hops else "")))
    if status == 429 or 500 <= status < 600:
        kind = "rate limited" if status == 429 else "server error"
        return _Pass(
            Result(url, TRANSIENT, status, f"HTTP {status} ({kind})"),
            retry=True,
            retry_after=retry_after_seconds(headers),
        )
    if status in _DENIED:
        return _Pass(Result(url, TRANSIENT, status, f"HTTP {status} (access denied; often bot protection)"))
    return _Pass(Result(url, TRANSIENT, status, f"HTTP {status}"))


async def _follow(url: str, client: httpx.AsyncClient, settings: Settings, gate: Gate) -> _Pass:
    """One GET of `url`, following redirects by hand."""
    import httpx

    chain = [url]
    current = url
    headers = {"Range": f"bytes=0-{settings.range_bytes - 1}"}
    for hops in range(settings.max_redirects + 1):
        parts = urlsplit(current)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return _Pass(Result(url, BROKEN, None, f"redirect to an unusable URL {current!r}"))

        async def get(target: str = current) -> tuple[int, httpx.Headers]:
            # Stream and close without reading: a server that ignores Range costs us nothing.
            async with client.stream("GET", target, headers=headers) as response:
                return response.status_code, response.headers

        try:
            status, got = await gate(parts.hostname, get)
        except httpx.TimeoutException:
            return _Pass(Result(url, TRANSIENT, None, f"timeout after {settings.timeout:g} s"), retry=True)
        except httpx.ConnectError as exc:
            if _no_such_host(exc):
                return _Pass(
                    Result(url, BROKEN, None, f"DNS failure: host {parts.hostname} does not resolve")
                )
            return _Pass(Result(url, TRANSIENT, None, f"connection failed: {describe(exc)}"), retry=True)
        except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as exc:
            return _Pass(
                Result(url, TRANSIENT, None, f"connection reset or closed: {describe(exc)}"), retry=True
            )
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            return _Pass(Result(url, BROKEN, None, f"unusable URL: {describe(exc)}"))
        except httpx.HTTPError as exc:
            return _Pass(Result(url, TRANSIENT, None, f"{type(exc).__name__}: {describe(exc)}"), retry=True)
        if status not in _REDIRECTS:
            return _classify(url, status, got, current, hops)
        location = got.get("location")
        if not location:
            return _Pass(Result(url, TRANSIENT, status, f"HTTP {status} without a Location header"))
        nxt = urljoin(current, location.strip())
        if nxt in chain:
            loop = " -> ".join([*chain[chain.index(nxt) :], nxt])
            return _Pass(Result(url, BROKEN, status, f"redirect loop: {loop}"))
        chain.append(nxt)
        current = nxt
    return _Pass(Result(url, BROKEN, None, f"more than {settings.max_redirects} redirects"))


async def check_url(
    url: str,
    *,
    client: httpx.AsyncClient,
    settings: Settings,
    gate: Gate,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
) -> Result:
    """The verdict for one URL, retrying what may be temporary. The slot is free while we wait."""
    tries = settings.retries + 1
    for attempt in range(tries):
        outcome = await _follow(url, client, settings, gate)
        if not outcome.retry or attempt == tries - 1:
            r = outcome.result
            if attempt:
                return Result(
                    r.url, r.verdict, r.status_code, f"{r.detail} (after {attempt + 1} tries)".strip()
                )
            return r
        if outcome.retry_after is not None:
            delay = min(outcome.retry_after, settings.retry_after_cap)
        else:
            delay = backoff_delay(attempt, settings.backoff, settings.backoff_cap, rng)
        await sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


async def check_urls(
    urls: Iterable[str],
    *,
    client: httpx.AsyncClient,
    settings: Settings = Settings(),
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
    on_result: Callable[[Result, int, int], None] | None = None,
) -> dict[str, Result]:
    """Verdicts for distinct URLs, checked concurrently within `settings.total_timeout` seconds.

    `on_result(result, done, total)` is called as each URL finishes (for progress output)."""
    gate = Gate(settings.concurrency, settings.per_host)
    unique = list(dict.fromkeys(urls))
    results: dict[str, Result] = {}

    async def one(u: str) -> None:
        results[u] = await check_url(u, client=client, settings=settings, gate=gate, sleep=sleep, rng=rng)
        if on_result is not None:
            on_result(results[u], len(results), len(unique))

    tasks = [asyncio.ensure_future(one(u)) for u in unique]
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=settings.total_timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in tasks:
            if task.done() and not task.cancelled() and (exc := task.exception()) is not None:
                raise exc  # a bug, not a verdict: let it surface
    for u in unique:
        if u not in results:
            results[u] = Result(
                u, TRANSIENT, None, f"not checked within the total limit of {settings.total_timeout:g} s"
            )
            if on_result is not None:
                on_result(results[u], len(results), len(unique))
    return results


def downgrade_if_offline(results: dict[str, Result]) -> tuple[dict[str, Result], bool]:
    """If no request reached any server and at least three different hosts "do not exist", the
    resolver is the problem (no network), not the links: call those failures transient."""
    dns = [r for r in results.values() if r.verdict == BROKEN and r.detail.startswith("DNS failure")]
    hosts = {urlsplit(r.url).hostname for r in dns}
    answered = any(r.status_code is not None for r in results.values())
    if answered or len(hosts) < 3:
        return results, False
    out = dict(results)
    for r in dns:
        out[r.url] = Result(r.url, TRANSIENT, None, f"{r.detail} (no host resolved at all: offline?)")
    return out, True


def make_client(settings: Settings) -> httpx.AsyncClient:
    import httpx

    from .http import user_agent

    return httpx.AsyncClient(
        headers={"User-Agent": user_agent("link checker"), "Accept": "*/*"},
        timeout=httpx.Timeout(settings.timeout),
        limits=httpx.Limits(
            max_connections=max(1, settings.concurrency),
            max_keepalive_connections=max(1, settings.concurrency),
        ),
        follow_redirects=False,
    )


@dataclass
class Report:
    rows: list[tuple[Target, Result]] = field(default_factory=list)
    excluded: list[tuple[Target, Exclusion]] = field(default_factory=list)
    from_cache: int = 0
    offline: bool = False

    @property
    def broken(self) -> list[tuple[Target, Result]]:
        return [(t, r) for t, r in self.rows if r.verdict == BROKEN]

    def as_json(self) -> list[dict[str, Any]]:
        return [
            {
                "url": t.url,
                "verdict": r.verdict,
                "status_code": r.status_code,
                "record": t.record,
                "detail": r.detail,
            }
            for t, r in self.rows
        ]


def run(
    targets: list[Target],
    *,
    settings: Settings,
    exclusions: list[Exclusion],
    cache: LinkCache,
    client: httpx.AsyncClient | None = None,
    on_result: Callable[[Result, int, int], None] | None = None,
) -> Report:
    """Check `targets` (cache first, exclusions skipped) and return the report; saves the cache."""
    report = Report()
    to_check: list[str] = []
    known: dict[str, Result] = {}
    for t in targets:
        rule = excluded_by(t.url, exclusions)
        if rule is not None:
            report.excluded.append((t, rule))
            continue
        if t.url in known or t.url in to_check:
            continue
        hit = cache.get(t.url)
        if hit is not None:
            known[t.url] = hit
            report.from_cache += 1
        else:
            to_check.append(t.url)

    async def go() -> dict[str, Result]:
        if client is not None:
            return await check_urls(to_check, client=client, settings=settings, on_result=on_result)
        async with make_client(settings) as own:
            return await check_urls(to_check, client=own, settings=settings, on_result=on_result)

    fresh = asyncio.run(go()) if to_check else {}
    fresh, report.offline = downgrade_if_offline(fresh)
    for result in fresh.values():
        cache.put(result)
    known.update(fresh)
    cache.save()
    order = {BROKEN: 0, TRANSIENT: 1, OK: 2}
    report.rows = sorted(
        ((t, known[t.url]) for t in targets if t.url in known),
        key=lambda tr: (order[tr[1].verdict], tr[0].record, tr[0].url),
    )
    return report
