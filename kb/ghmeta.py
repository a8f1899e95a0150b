"""`kb refresh-meta`: stars, last push and archived flag of each record's `repo`, from the GitHub REST API.

The result lives in `data/meta/github.json`, apart from the curated records, so that a person's
edit and the weekly bot's refresh never touch the same file:

    {
      "fetched": "2026-05-11",                      # the day of the last run
      "repos": {
        "locuslab/wanda": {                         # the record's `repo`, exactly as written
          "stars": 812,
          "last_commit": "2024-03-02",              # date of the repo's last push (`pushed_at`)
          "archived": false,
          "etag": "W/\\"4f1c...\\"",                 # for the next conditional request (may be null)
          "fetched_at": "2026-05-11",               # the day these values were confirmed
          "renamed_to": "new-owner/wanda"           # only when GitHub redirected us
        }
      }
    }

`last_commit` is `pushed_at` from `GET /repos/{owner}/{repo}`: one request per repository (the
commits endpoint would double the cost and defeat the ETag), and a push is what "last activity"
means to a reader. Etiquette (GitHub's REST best practices): requests one at a time, a
User-Agent, an optional token from `GITHUB_TOKEN`, `If-None-Match` with the stored ETag (a 304 is
free against the rate limit; it keeps the stored values and moves `fetched_at`), renamed
repositories followed (301) and reported, and the rate limit honoured: `Retry-After`, else
`X-RateLimit-Reset` when `X-RateLimit-Remaining` is 0. A wait longer than `max_wait` stops the run
cleanly; what was refreshed so far is still written.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import KBError
from .fsutil import write_text_atomic
from .http import backoff_delay, describe, retry_after_seconds, user_agent

if TYPE_CHECKING:
    import httpx

DEFAULT_API_URL = "https://api.github.com"
META_FILE = Path("data/meta/github.json")
_SERVER_RETRIES = 2


def read_meta(path: Path) -> dict[str, Any]:
    """The metadata file, or an empty one when it is missing or unreadable (it is regenerable)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"fetched": None, "repos": {}}
    repos = data.get("repos") if isinstance(data, dict) else None
    if not isinstance(repos, dict):
        return {"fetched": None, "repos": {}}
    return {"fetched": data.get("fetched"), "repos": {k: v for k, v in repos.items() if isinstance(v, dict)}}


def write_meta(path: Path, fetched: str, repos: dict[str, dict[str, Any]]) -> None:
    body = {"fetched": fetched, "repos": {k: repos[k] for k in sorted(repos, key=str.lower)}}
    write_text_atomic(Path(path), json.dumps(body, indent=2, ensure_ascii=False) + "\n")


@dataclass
class Outcome:
    repos: dict[str, dict[str, Any]] = field(default_factory=dict)
    refreshed: list[str] = field(default_factory=list)  # 200 with new values
    unchanged: list[str] = field(default_factory=list)  # 304
    renamed: dict[str, str] = field(default_factory=dict)  # record's name -> GitHub's name
    failed: dict[str, str] = field(default_factory=dict)  # name -> reason
    stopped: str | None = None  # why the run ended early, if it did


class _Stop(Exception):
    pass


class _RateLimit:
    """What the last response said about our budget, and how long to wait before the next request."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.remaining: int | None = None
        self.reset: float | None = None

    def update(self, headers: httpx.Headers) -> None:
        try:
            self.remaining = int(headers["x-ratelimit-remaining"])
        except (KeyError, ValueError):
            self.remaining = None
        try:
            self.reset = float(headers["x-ratelimit-reset"])
        except (KeyError, ValueError):
            self.reset = None

    def wait_for_reset(self) -> float | None:
        """Seconds until the window resets, when the budget is spent; None when we may go on."""
        if self.remaining != 0:
            return None
        if self.reset is None:
            return 60.0  # GitHub's advice when it gives no reset time: at least a minute
        return max(0.0, self.reset - self.clock()) + 1.0


def _date(stamp: object) -> str | None:
    return stamp[:10] if isinstance(stamp, str) and len(stamp) >= 10 else None


def refresh(
    names: Iterable[str],
    *,
    client: httpx.Client,
    api_url: str,
    stored: dict[str, dict[str, Any]],
    today: str,
    max_wait: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
    log: Callable[[str], None] = lambda line: None,
) -> Outcome:
    """Refresh each repository in `names`, serially. Entries for other repositories are dropped."""
    import httpx

    wanted = list(dict.fromkeys(names))
    out = Outcome(repos={n: dict(stored[n]) for n in wanted if n in stored})
    budget = _RateLimit(clock)
    reached_server = False

    def pause(seconds: float, why: str) -> None:
        if seconds > max_wait:
            raise _Stop(f"{why}: GitHub asks us to wait {seconds:.0f} s, more than --max-wait {max_wait:g} s")
        log(f"{why}: waiting {seconds:.0f} s")
        sleep(seconds)

    def one(name: str) -> None:
        nonlocal reached_server
        url = f"{api_url.rstrip('/')}/repos/{name}"
        prior = out.repos.get(name)
        headers = {"If-None-Match": prior["etag"]} if prior and prior.get("etag") else {}
        errors = limited = 0
        while True:
            try:
                response = client.get(url, headers=headers)
            except httpx.TransportError as exc:
                if not reached_server and isinstance(exc, httpx.ConnectError):
                    raise KBError(f"cannot reach the GitHub API at {api_url}: {describe(exc)}") from None
                errors += 1
                if errors > _SERVER_RETRIES:
                    out.failed[name] = f"network error: {describe(exc)}"
                    return
                sleep(backoff_delay(errors - 1, 2.0, 30.0))
                continue
            reached_server = True
            budget.update(response.headers)
            status = response.status_code
            hint = retry_after_seconds(response.headers)
            if status in (403, 429) and (hint is not None or budget.remaining == 0):
                limited += 1
                if limited > _SERVER_RETRIES:
                    raise _Stop(f"still rate limited after {limited} waits")
                pause(hint if hint is not None else budget.wait_for_reset() or 60.0, "rate limited")
                continue
            if status >= 500:
                errors += 1
                if errors > _SERVER_RETRIES:
                    out.failed[name] = f"HTTP {status} after {errors} tries"
                    return
                sleep(backoff_delay(errors - 1, 2.0, 30.0))
                continue
            break
        if status == 304 and prior is not None:
            prior["fetched_at"] = today
            out.unchanged.append(name)
            return
        if status != 200:
            reason = {404: "not found (deleted or private?)", 451: "unavailable for legal reasons"}.get(
                status, ""
            )
            out.failed[name] = f"HTTP {status}" + (f": {reason}" if reason else "")
            return
        try:
            data = response.json()
            entry = {
                "stars": int(data["stargazers_count"]),
                "last_commit": _date(data.get("pushed_at")),
                "archived": bool(data.get("archived", False)),
                "etag": response.headers.get("etag"),
                "fetched_at": today,
            }
            full_name = str(data.get("full_name") or name)
        except (ValueError, KeyError, TypeError):
            out.failed[name] = "the API answered 200 with an unexpected body"
            return
        if full_name.lower() != name.lower():
            entry["renamed_to"] = full_name
            out.renamed[name] = full_name
        out.repos[name] = entry
        out.refreshed.append(name)

    for i, name in enumerate(wanted):
        try:
            if i:
                wait = budget.wait_for_reset()
                if wait is not None:
                    pause(wait, "rate limit used up")
            one(name)
        except _Stop as stop:
            done = len(out.refreshed) + len(out.unchanged)
            out.stopped = f"{stop}; refreshed {done} of {len(wanted)}, the rest keep their stored values"
            break
    return out


def make_client(token: str | None) -> httpx.Client:
    import httpx

    headers = {
        "User-Agent": user_agent("repository metadata"),
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
    }
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(
        headers=headers,
        timeout=httpx.Timeout(30.0, connect=10.0),
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        follow_redirects=True,
        max_redirects=3,
    )


def today_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).date().isoformat()
