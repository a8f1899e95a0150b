"""`kb check-links` and `kb refresh-meta`: the commands that talk to the network.

Exit codes: 0 all good; 1 `check-links` found a broken link, or `refresh-meta` could not refresh
every repository; 2 bad usage, an unusable exclusion file, or no network at all.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from kb.errors import KBError
from kb.http import env_float
from kb.paths import cache_dir, repo_root

if TYPE_CHECKING:
    from kb.store import Record


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def _positive(text: str) -> int:
    value = _count(text)
    if value < 1:
        raise argparse.ArgumentTypeError("expected a number >= 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    c = sub.add_parser(
        "check-links",
        help="check every URL in the records (exit 1 only when one is broken)",
        description="Check every URL in the records concurrently. Verdicts: ok, broken (404, 410, no such host, "
        "redirect loop, too many redirects), transient (timeouts, resets, 5xx/429 after retries, "
        "403 bot protection). Exit 1 only when a link is broken.",
    )
    c.add_argument(
        "--changed-only",
        action="store_true",
        help="only records changed against the merge base of --base and HEAD (for pull requests)",
    )
    c.add_argument(
        "--base",
        metavar="REV",
        default=os.environ.get("KB_BASE_REV", "origin/main"),
        help="git revision to compare with for --changed-only (default $KB_BASE_REV or origin/main)",
    )
    c.add_argument(
        "--json",
        metavar="PATH",
        help='write a JSON list of {url, verdict, status_code, record, detail} ("-" for standard output)',
    )
    c.add_argument(
        "--exclude-file",
        metavar="PATH",
        type=Path,
        help="URL patterns not to check, each with a reason (default: links-exclude.yaml in the repository)",
    )
    c.add_argument(
        "--cache-ttl",
        metavar="HOURS",
        type=_seconds,
        default=env_float("KB_LINKS_CACHE_TTL", 24.0),
        help="reuse an 'ok' verdict younger than this (default $KB_LINKS_CACHE_TTL or 24; 0 disables)",
    )
    c.add_argument("--no-cache", action="store_true", help="neither read nor write the result cache")
    c.add_argument(
        "--concurrency", metavar="N", type=_positive, default=16, help="requests in flight (default 16)"
    )
    c.add_argument(
        "--per-host", metavar="N", type=_positive, default=2, help="requests in flight per host (default 2)"
    )
    c.add_argument(
        "--timeout", metavar="SECONDS", type=_seconds, default=15.0, help="per request (default 15)"
    )
    c.add_argument(
        "--retries",
        metavar="N",
        type=_count,
        default=2,
        help="extra tries for temporary failures (default 2)",
    )
    c.add_argument(
        "--backoff",
        metavar="SECONDS",
        type=_seconds,
        default=1.0,
        help="base of the exponential backoff between tries (default 1)",
    )
    c.add_argument(
        "--retry-after-cap",
        metavar="SECONDS",
        type=_seconds,
        default=60.0,
        help="longest Retry-After to honour (default 60)",
    )
    c.add_argument("--max-redirects", metavar="N", type=_count, default=10, help="default 10")
    c.add_argument(
        "--total-timeout",
        metavar="SECONDS",
        type=_seconds,
        default=600.0,
        help="bound on the whole run; unfinished URLs count as transient (default 600)",
    )
    c.set_defaults(func=_check_links)

    r = sub.add_parser(
        "refresh-meta",
        help="refresh GitHub stars, last push and archived flag into data/meta/github.json",
        description="Fetch each record's `repo` from the GitHub REST API ($KB_GITHUB_API_URL, token from "
        "$GITHUB_TOKEN), one request at a time, conditional on the stored ETag.",
    )
    r.add_argument("--out", metavar="PATH", type=Path, help="metadata file (default data/meta/github.json)")
    r.add_argument(
        "--max-wait",
        metavar="SECONDS",
        type=_seconds,
        default=60.0,
        help="longest rate-limit wait before stopping cleanly (default 60)",
    )
    r.add_argument("--json", action="store_true", help="print a JSON summary of what changed")
    r.set_defaults(func=_refresh_meta)


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _records(root: Path) -> list[Record]:
    from kb.store import load_kb

    kb = load_kb(root)
    if kb.vocab is None:
        raise KBError(f"{kb.problems[0]} (run `kb validate`)")
    skipped = len(kb.stems) - len(kb.records)
    if skipped:
        _err(f"kb: warning: {skipped} record(s) do not load and are skipped; run `kb validate`")
    return kb.records


def _check_links(args: argparse.Namespace) -> int:
    import json

    from kb import links
    from kb.fsutil import write_text_atomic

    root = repo_root()
    exclusions = links.load_exclusions(args.exclude_file or root / "links-exclude.yaml")
    records = _records(root)
    if args.changed_only:
        changed = links.changed_paper_files(root, args.base)
        records = [r for r in records if r.file in changed]
        _err(f"{len(records)} changed record(s) against {args.base}")
    targets = [t for rec in records for t in links.record_targets(rec)]
    settings = links.Settings(
        concurrency=args.concurrency,
        per_host=args.per_host,
        timeout=args.timeout,
        retries=args.retries,
        backoff=args.backoff,
        retry_after_cap=args.retry_after_cap,
        max_redirects=args.max_redirects,
        total_timeout=args.total_timeout,
    )
    ttl = 0.0 if args.no_cache else args.cache_ttl * 3600
    cache = links.LinkCache(cache_dir() / "links-v1.json", ttl)
    distinct = len({t.url for t in targets})
    _err(f"checking {distinct} distinct URL(s) from {len(records)} record(s)")

    def progress(result: links.Result, done: int, total: int) -> None:
        # Neutral wording: a verdict may still change (see links.downgrade_if_offline).
        what = (
            result.detail
            if result.verdict != links.OK or not result.status_code
            else f"HTTP {result.status_code}"
        )
        _err(f"[{done}/{total}] {result.url}: {what}")

    started = time.monotonic()
    report = links.run(targets, settings=settings, exclusions=exclusions, cache=cache, on_result=progress)
    for t, res in report.rows:
        if res.verdict != links.OK:
            code = res.status_code if res.status_code is not None else "-"
            print(f"{res.verdict:9} {code!s:>3}  {t.url}  {t.file}:{t.line} {t.field}  {res.detail}")
    if args.json:
        text = json.dumps(report.as_json(), indent=2, ensure_ascii=False) + "\n"
        if args.json == "-":
            sys.stdout.write(text)
        else:
            write_text_atomic(Path(args.json), text)
    if report.offline:
        _err(
            "kb: warning: no host resolved and no server answered: are you offline? DNS failures count as transient"
        )
    tally = {
        v: sum(1 for _, r in report.rows if r.verdict == v) for v in (links.OK, links.BROKEN, links.TRANSIENT)
    }
    _err(
        f"{tally['ok']} ok, {tally['broken']} broken, {tally['transient']} transient "
        f"({report.from_cache} from cache, {len(report.excluded)} excluded) in {time.monotonic() - started:.1f} s"
    )
    return 1 if report.broken else 0


def _refresh_meta(args: argparse.Namespace) -> int:
    import json

    from kb import ghmeta

    root = repo_root()
    out_path = args.out or root / ghmeta.META_FILE
    records = _records(root)
    files: dict[str, list[str]] = {}
    for rec in records:
        if rec.paper.repo:
            files.setdefault(rec.paper.repo, []).append(rec.file)
    api_url = os.environ.get("KB_GITHUB_API_URL", "").strip() or ghmeta.DEFAULT_API_URL
    if not api_url.startswith(("http://", "https://")):
        raise KBError(f"KB_GITHUB_API_URL must be an http(s) URL, got {api_url!r}")
    token = os.environ.get("GITHUB_TOKEN", "").strip() or None
    stored = ghmeta.read_meta(out_path)["repos"]
    today = ghmeta.today_utc()
    _err(
        f"refreshing {len(files)} repositor{'y' if len(files) == 1 else 'ies'} "
        f"({'with' if token else 'without'} a token)"
    )
    with ghmeta.make_client(token) as client:
        outcome = ghmeta.refresh(
            sorted(files, key=str.lower),
            client=client,
            api_url=api_url,
            stored=stored,
            today=today,
            max_wait=args.max_wait,
            log=_err,
        )
    ghmeta.write_meta(out_path, today, outcome.repos)
    for old, new in outcome.renamed.items():
        _err(f"kb: note: {old} is now {new}; update `repo:` in {', '.join(files[old])}")
    for name, reason in outcome.failed.items():
        _err(f"kb: warning: {name} ({', '.join(files[name])}): {reason}")
    if outcome.stopped:
        _err(f"kb: stopped early: {outcome.stopped}")
    if args.json:
        print(
            json.dumps(
                {
                    "refreshed": outcome.refreshed,
                    "unchanged": outcome.unchanged,
                    "renamed": outcome.renamed,
                    "failed": outcome.failed,
                    "stopped": outcome.stopped,
                },
                indent=2,
            )
        )
    try:
        shown = out_path.resolve().relative_to(root.resolve())
    except ValueError:
        shown = out_path
    _err(
        f"{len(outcome.refreshed)} refreshed, {len(outcome.unchanged)} unchanged (304), "
        f"{len(outcome.failed)} failed; wrote {shown}"
    )
    return 1 if outcome.failed or outcome.stopped else 0
