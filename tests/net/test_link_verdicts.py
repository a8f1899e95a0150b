"""Every kind of fault a link can have, against a real local server: the verdict must be right."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from localserver import LocalServer, Reply, Request, Script, closed_port

from kb import links

SETTINGS = links.Settings(
    concurrency=8,
    per_host=4,
    timeout=0.5,
    retries=2,
    backoff=0.05,
    backoff_cap=0.2,
    retry_after_cap=2.0,
    max_redirects=5,
    total_timeout=30.0,
)


class RecordingSleep:
    """Stands in for asyncio.sleep: remembers the requested delays and yields without waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


def fault_route() -> Callable[[Request], Reply | None]:
    script = Script(
        **{
            "/429-then-ok": [Reply(429, headers={"Retry-After": "1"}), Reply(200, b"ok")],
            "/503-then-ok": [Reply(503), Reply(200, b"ok")],
        }
    )

    def route(req: Request) -> Reply | None:
        p = req.path
        if p == "/ok":
            # Honour the Range header the way real servers do.
            rng = req.headers.get("range", "")
            return (
                Reply(206, b"x" * 1024, {"Content-Range": "bytes 0-1023/4096"})
                if rng
                else Reply(200, b"x" * 4096)
            )
        if p in ("/404", "/410", "/403", "/999"):
            return Reply(int(p[1:]), b"nope")
        if p == "/always-503":
            return Reply(503, b"down")
        if p == "/always-429":
            return Reply(429, b"slow down", {"Retry-After": "3600"})
        if p == "/slow":
            return Reply(200, b"late", delay=1.5)
        if p == "/reset":
            return Reply(reset=True)
        if p == "/loop-a":
            return Reply(302, headers={"Location": "/loop-b"})
        if p == "/loop-b":
            return Reply(302, headers={"Location": "/loop-a"})
        if p.startswith("/chain/"):
            n = int(p.rsplit("/", 1)[1])
            return Reply(302, headers={"Location": f"/chain/{n + 1}"})
        if p == "/moved":
            return Reply(301, headers={"Location": "/ok"})
        if p == "/moved-to-gone":
            return Reply(308, headers={"Location": "/410"})
        if p == "/no-location":
            return Reply(302)
        return script.next(p)

    return route


# path (or full URL) -> (verdict, status_code, words the detail must contain)
CASES = {
    "/ok": ("ok", 206, ""),
    "/404": ("broken", 404, "HTTP 404"),
    "/410": ("broken", 410, "HTTP 410"),
    "/403": ("transient", 403, "bot protection"),
    "/999": ("transient", 999, "bot protection"),
    "/429-then-ok": ("ok", 200, "after 2 tries"),
    "/503-then-ok": ("ok", 200, "after 2 tries"),
    "/always-503": ("transient", 503, "after 3 tries"),
    "/always-429": ("transient", 429, "rate limited"),
    "/slow": ("transient", None, "timeout"),
    "/reset": ("transient", None, "reset"),
    "/loop-a": ("broken", 302, "redirect loop"),
    "/chain/0": ("broken", None, "more than 5 redirects"),
    "/moved": ("ok", 206, "redirects to"),
    "/moved-to-gone": ("broken", 410, "HTTP 410 at"),
    "/no-location": ("transient", 302, "without a Location"),
    "http://nonexistent.invalid/paper": ("broken", None, "DNS failure"),
    "refused": ("transient", None, "connection failed"),
}


@pytest.fixture(scope="module")
def fault_run() -> tuple[LocalServer, dict[str, links.Result], RecordingSleep, dict[str, str]]:
    server = LocalServer(fault_route())
    refused = f"http://127.0.0.1:{closed_port()}/x"
    urls = {
        key: key if key.startswith("http") else refused if key == "refused" else server.url(key)
        for key in CASES
    }
    sleep = RecordingSleep()

    async def go() -> dict[str, links.Result]:
        async with links.make_client(SETTINGS) as client:
            return await asyncio.wait_for(
                links.check_urls(urls.values(), client=client, settings=SETTINGS, sleep=sleep), timeout=60
            )

    try:
        results = asyncio.run(go())
    finally:
        server.stop()
    return server, results, sleep, urls


@pytest.mark.parametrize("key", list(CASES))
def test_each_fault_gets_its_verdict(fault_run, key: str) -> None:
    _, results, _, urls = fault_run
    verdict, status, words = CASES[key]
    got = results[urls[key]]
    assert (got.verdict, got.status_code) == (verdict, status), got
    assert words in got.detail


def test_requests_are_small_ranged_gets_with_a_user_agent(fault_run) -> None:
    server, *_ = fault_run
    assert server.requests
    for req in server.requests:
        assert req.headers["range"] == "bytes=0-1023"
        assert req.headers["user-agent"].startswith("pruning-kb/")


def test_retries_are_bounded_and_definitive_answers_are_not_retried(fault_run) -> None:
    server, *_ = fault_run
    assert server.hits("/always-503") == SETTINGS.retries + 1
    assert server.hits("/429-then-ok") == 2
    assert server.hits("/404") == 1
    assert server.hits("/403") == 1
    assert server.hits("/reset") == SETTINGS.retries + 1
    assert server.hits("/chain/0") == 1 and server.hits(f"/chain/{SETTINGS.max_redirects}") == 1
    assert server.hits(f"/chain/{SETTINGS.max_redirects + 1}") == 0


def test_retry_after_is_honoured_and_capped(fault_run) -> None:
    _, _, sleep, _ = fault_run
    assert 1.0 in sleep.delays  # /429-then-ok asked for 1 s
    assert SETTINGS.retry_after_cap in sleep.delays  # /always-429 asked for an hour
    assert max(sleep.delays) <= SETTINGS.retry_after_cap
    backoffs = [d for d in sleep.delays if d not in (1.0, SETTINGS.retry_after_cap)]
    assert backoffs and all(0 < d <= SETTINGS.backoff_cap for d in backoffs)


def _hold_route(req: Request) -> Reply:
    return Reply(200, b"held", delay=0.3)


@pytest.mark.parametrize(("concurrency", "per_host", "limit"), [(16, 2, 2), (3, 16, 3)])
def test_global_and_per_host_limits(serve, concurrency: int, per_host: int, limit: int) -> None:
    server = serve(_hold_route)
    settings = links.Settings(concurrency=concurrency, per_host=per_host, timeout=5, retries=0)
    urls = [server.url(f"/hold/{i}") for i in range(8)]

    async def go() -> dict[str, links.Result]:
        async with links.make_client(settings) as client:
            return await asyncio.wait_for(
                links.check_urls(urls, client=client, settings=settings), timeout=30
            )

    results = asyncio.run(go())
    assert all(r.verdict == "ok" for r in results.values())
    assert server.max_in_flight <= limit


def test_without_a_tight_limit_requests_do_overlap(serve) -> None:
    """Control for the test above: the server can see more than two requests at once."""
    server = serve(_hold_route)
    settings = links.Settings(concurrency=8, per_host=8, timeout=5, retries=0)
    urls = [server.url(f"/hold/{i}") for i in range(8)]

    async def go() -> None:
        async with links.make_client(settings) as client:
            await asyncio.wait_for(links.check_urls(urls, client=client, settings=settings), timeout=30)

    asyncio.run(go())
    assert server.max_in_flight > 2


def test_total_time_is_bounded(serve) -> None:
    server = serve(lambda req: Reply(200, b"late", delay=3.0) if req.path == "/slow" else Reply(200, b"ok"))
    settings = links.Settings(timeout=10, retries=0, total_timeout=0.5)
    urls = [server.url("/slow"), server.url("/fast")]

    async def go() -> dict[str, links.Result]:
        async with links.make_client(settings) as client:
            return await asyncio.wait_for(
                links.check_urls(urls, client=client, settings=settings), timeout=20
            )

    results = asyncio.run(go())
    assert results[urls[1]].verdict == "ok"
    slow = results[urls[0]]
    assert slow.verdict == "transient" and "total limit" in slow.detail


def test_no_resolvable_host_at_all_means_offline_not_broken() -> None:
    settings = links.Settings(timeout=2, retries=0)
    urls = [f"http://host{i}.nonexistent.invalid/" for i in range(3)]

    async def go() -> dict[str, links.Result]:
        async with links.make_client(settings) as client:
            return await links.check_urls(urls, client=client, settings=settings)

    raw = asyncio.run(go())
    assert {r.verdict for r in raw.values()} == {"broken"}
    downgraded, offline = links.downgrade_if_offline(raw)
    assert offline and {r.verdict for r in downgraded.values()} == {"transient"}
    # One server that answered is proof of a network: DNS failures then stay broken.
    answered = {**raw, "http://127.0.0.1:1/": links.Result("http://127.0.0.1:1/", "ok", 200)}
    kept, offline = links.downgrade_if_offline(answered)
    assert not offline and kept == answered


def test_link_cache_keeps_ok_verdicts_for_the_ttl(tmp_path: Path) -> None:
    clock = [1000.0]
    path = tmp_path / "links.json"
    cache = links.LinkCache(path, ttl=60, now=lambda: clock[0])
    cache.put(links.Result("https://a.example/", "ok", 200, ""))
    cache.put(links.Result("https://b.example/", "broken", 404, "HTTP 404"))
    cache.save()
    clock[0] += 30
    again = links.LinkCache(path, ttl=60, now=lambda: clock[0])
    assert again.get("https://a.example/") == links.Result("https://a.example/", "ok", 200, "")
    assert again.get("https://b.example/") is None  # problems are always checked again
    clock[0] += 31
    assert again.get("https://a.example/") is None
    path.write_text("{not json", encoding="utf-8")
    assert links.LinkCache(path, ttl=60).entries == {}


def test_run_uses_the_cache_and_skips_exclusions(serve, tmp_path: Path) -> None:
    server = serve(lambda req: Reply(200, b"ok") if req.path.startswith("/ok") else Reply(404))
    targets = [
        links.Target(server.url("/ok/1"), "a", "papers/a.yaml", 3, "links.paper"),
        links.Target(server.url("/ok/1"), "b", "papers/b.yaml", 3, "links.paper"),
        links.Target(server.url("/gone"), "b", "papers/b.yaml", 4, "links.blog[0]"),
        links.Target(server.url("/skip/me"), "b", "papers/b.yaml", 5, "links.blog[1]"),
    ]
    rules = [links.Exclusion(re.compile(r"/skip/"), "the test says so")]
    clock = [0.0]
    settings = links.Settings(timeout=5, retries=0)

    def run() -> links.Report:
        cache = links.LinkCache(tmp_path / "c.json", ttl=3600, now=lambda: clock[0])
        return links.run(targets, settings=settings, exclusions=rules, cache=cache)

    first = run()
    assert [(t.record, r.verdict) for t, r in first.rows] == [("b", "broken"), ("a", "ok"), ("b", "ok")]
    assert len(first.excluded) == 1 and server.hits("/skip/me") == 0
    assert server.hits("/ok/1") == 1 and server.hits("/gone") == 1
    second = run()
    assert second.from_cache == 1 and server.hits("/ok/1") == 1  # served from the cache
    assert server.hits("/gone") == 2  # a broken link is looked at again
    clock[0] += 7200
    run()
    assert server.hits("/ok/1") == 2  # expired
