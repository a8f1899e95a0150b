"""`kb refresh-meta` against a local GitHub-like REST API with ETags, 304s, renames and rate limits."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from localserver import Reply, Request, closed_port, json_reply, write_record

from kb import ghmeta
from kb_cli.main import main

TODAY, LATER = "2026-05-04", "2026-05-11"


class FakeGitHub:
    """Enough of `GET /repos/{owner}/{repo}` to test a polite client."""

    def __init__(self) -> None:
        self.repos = {
            "locuslab/wanda": {
                "stargazers_count": 812,
                "pushed_at": "2024-03-02T10:00:00Z",
                "archived": False,
            },
            "IST-DASLab/sparsegpt": {
                "stargazers_count": 700,
                "pushed_at": "2023-11-30T08:00:00Z",
                "archived": True,
            },
            "new-owner/renamed": {"stargazers_count": 5, "pushed_at": None, "archived": False},
        }
        self.ids = {"42": "new-owner/renamed"}
        self.moved = {"old-owner/renamed": "42"}
        self.remaining = 59
        self.reset_at = int(time.time()) + 3600
        self.limited_once: dict[str, dict[str, str]] = {}  # repo -> headers of one 403/429 before serving
        self.failing: dict[str, int] = {}  # repo -> how many 502s to answer first
        self.lock = threading.Lock()

    def etag(self, name: str) -> str:
        data = self.repos[name]
        return f'W/"{name}-{data["stargazers_count"]}-{data["archived"]}"'

    def route(self, req: Request) -> Reply:
        with self.lock:
            parts = req.path.strip("/").split("/")
            if parts[0] == "repositories" and len(parts) == 2:
                name = self.ids[parts[1]]
            elif parts[0] == "repos" and len(parts) == 3:
                name = f"{parts[1]}/{parts[2]}"
                if name in self.moved:
                    return json_reply(
                        {"message": "Moved Permanently"},
                        301,
                        {"Location": f"/repositories/{self.moved[name]}"},
                    )
            else:
                return json_reply({"message": "Not Found"}, 404)
            if self.failing.get(name, 0) > 0:
                self.failing[name] -= 1
                return json_reply({"message": "Bad Gateway"}, 502)
            if name in self.limited_once:
                headers = self.limited_once.pop(name)
                status = 429 if "Retry-After" in headers else 403
                return json_reply({"message": "API rate limit exceeded"}, status, headers)
            rate = {
                "X-RateLimit-Limit": "60",
                "X-RateLimit-Remaining": str(self.remaining),
                "X-RateLimit-Reset": str(self.reset_at),
            }
            if name not in self.repos:
                self.remaining = max(0, self.remaining - 1)
                return json_reply({"message": "Not Found"}, 404, rate)
            tag = self.etag(name)
            if req.headers.get("if-none-match") == tag:
                return Reply(304, b"", {"ETag": tag, **rate})  # free: the budget is not spent
            self.remaining = max(0, self.remaining - 1)
            rate["X-RateLimit-Remaining"] = str(self.remaining)
            body = {"full_name": name, **self.repos[name]}
            return json_reply(body, 200, {"ETag": tag, **rate})


@pytest.fixture
def github(serve):
    fake = FakeGitHub()
    server = serve(fake.route)
    return fake, server


def _refresh(server, names, stored=None, today=TODAY, **kw) -> ghmeta.Outcome:
    with ghmeta.make_client(kw.pop("token", None)) as client:
        return ghmeta.refresh(
            names, client=client, api_url=server.base, stored=stored or {}, today=today, **kw
        )


def test_first_refresh_reads_stars_push_date_and_archived(github) -> None:
    fake, server = github
    out = _refresh(server, ["locuslab/wanda", "IST-DASLab/sparsegpt"])
    assert out.refreshed == ["locuslab/wanda", "IST-DASLab/sparsegpt"] and not out.failed
    assert out.repos["locuslab/wanda"] == {
        "stars": 812,
        "last_commit": "2024-03-02",
        "archived": False,
        "etag": fake.etag("locuslab/wanda"),
        "fetched_at": TODAY,
    }
    assert out.repos["IST-DASLab/sparsegpt"]["archived"] is True
    for req in server.requests:
        assert req.headers["user-agent"].startswith("pruning-kb/")
        assert req.headers["accept"] == "application/vnd.github+json"
        assert "authorization" not in req.headers and "if-none-match" not in req.headers


def test_second_refresh_is_conditional_and_304_keeps_values(github) -> None:
    fake, server = github
    first = _refresh(server, ["locuslab/wanda", "IST-DASLab/sparsegpt"])
    fake.repos["IST-DASLab/sparsegpt"]["stargazers_count"] = 701  # changes: new ETag
    spent = fake.remaining
    second = _refresh(server, ["locuslab/wanda", "IST-DASLab/sparsegpt"], stored=first.repos, today=LATER)
    assert second.unchanged == ["locuslab/wanda"] and second.refreshed == ["IST-DASLab/sparsegpt"]
    assert second.repos["locuslab/wanda"] == {**first.repos["locuslab/wanda"], "fetched_at": LATER}
    assert second.repos["IST-DASLab/sparsegpt"]["stars"] == 701
    sent = [r.headers.get("if-none-match") for r in server.requests[2:]]
    assert sent == [first.repos["locuslab/wanda"]["etag"], first.repos["IST-DASLab/sparsegpt"]["etag"]]
    assert fake.remaining == spent - 1  # the 304 cost nothing


def test_a_renamed_repo_is_followed_and_noted(github) -> None:
    _, server = github
    out = _refresh(server, ["old-owner/renamed"])
    assert out.renamed == {"old-owner/renamed": "new-owner/renamed"}
    assert out.repos["old-owner/renamed"]["renamed_to"] == "new-owner/renamed"
    assert out.repos["old-owner/renamed"]["last_commit"] is None


def test_a_missing_repo_fails_but_keeps_its_stored_values(github) -> None:
    _, server = github
    stored = {
        "gone/away": {"stars": 3, "last_commit": None, "archived": False, "etag": None, "fetched_at": TODAY},
        "not/wanted": {"stars": 1, "last_commit": None, "archived": False, "etag": None, "fetched_at": TODAY},
    }
    out = _refresh(server, ["gone/away"], stored=stored)
    assert "404" in out.failed["gone/away"]
    assert out.repos == {"gone/away": stored["gone/away"]}  # repositories no record names are dropped


class Sleeper:
    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def test_rate_limit_reset_is_awaited_when_short(github) -> None:
    fake, server = github
    now = time.time()
    fake.limited_once["locuslab/wanda"] = {
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(int(now) + 30),
    }
    sleep = Sleeper()
    out = _refresh(server, ["locuslab/wanda"], sleep=sleep, clock=lambda: now, max_wait=120)
    assert out.refreshed == ["locuslab/wanda"] and out.stopped is None
    assert len(sleep.waits) == 1 and 29 <= sleep.waits[0] <= 32


def test_retry_after_is_honoured(github) -> None:
    fake, server = github
    fake.limited_once["locuslab/wanda"] = {"Retry-After": "7"}
    sleep = Sleeper()
    out = _refresh(server, ["locuslab/wanda"], sleep=sleep)
    assert out.refreshed == ["locuslab/wanda"] and sleep.waits == [7.0]


def test_a_long_rate_limit_stops_cleanly_and_keeps_the_rest(github) -> None:
    fake, server = github
    now = time.time()
    fake.limited_once["locuslab/wanda"] = {
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(int(now) + 3000),
    }
    stored = {
        "locuslab/wanda": {
            "stars": 1,
            "last_commit": None,
            "archived": False,
            "etag": None,
            "fetched_at": "2026-01-01",
        }
    }
    sleep = Sleeper()
    out = _refresh(
        server,
        ["IST-DASLab/sparsegpt", "locuslab/wanda"],
        stored=stored,
        sleep=sleep,
        clock=lambda: now,
        max_wait=60,
    )
    assert out.refreshed == ["IST-DASLab/sparsegpt"]
    assert out.stopped and "more than --max-wait" in out.stopped and sleep.waits == []
    assert out.repos["locuslab/wanda"] == stored["locuslab/wanda"]


def test_a_spent_budget_pauses_before_the_next_request(github) -> None:
    fake, server = github
    now = time.time()
    fake.remaining = 1  # the first 200 leaves 0
    fake.reset_at = int(now) + 10
    sleep = Sleeper()
    out = _refresh(server, ["locuslab/wanda", "IST-DASLab/sparsegpt"], sleep=sleep, clock=lambda: now)
    assert len(sleep.waits) == 1 and 10 <= sleep.waits[0] <= 12
    assert out.refreshed == ["locuslab/wanda", "IST-DASLab/sparsegpt"]


def test_server_errors_are_retried_with_backoff_then_given_up(github) -> None:
    fake, server = github
    fake.failing = {"locuslab/wanda": 1, "IST-DASLab/sparsegpt": 99}
    sleep = Sleeper()
    out = _refresh(server, ["locuslab/wanda", "IST-DASLab/sparsegpt"], sleep=sleep)
    assert out.refreshed == ["locuslab/wanda"]
    assert out.failed == {"IST-DASLab/sparsegpt": "HTTP 502 after 3 tries"}
    assert len(sleep.waits) == 3 and all(0 < w <= 30 for w in sleep.waits)
    assert server.hits("/repos/IST-DASLab/sparsegpt") == 3


def test_requests_are_serial(github) -> None:
    _, server = github
    _refresh(server, ["locuslab/wanda", "IST-DASLab/sparsegpt", "old-owner/renamed"])
    assert server.max_in_flight == 1


# ---- the command ------------------------------------------------------------------------------------


@pytest.fixture
def kb_with_repos(tmp_kb: Path, github, monkeypatch: pytest.MonkeyPatch):
    fake, server = github
    write_record(tmp_kb, "wanda", repo="locuslab/wanda")
    write_record(tmp_kb, "sparsegpt", repo="IST-DASLab/sparsegpt")
    write_record(tmp_kb, "norepo")
    monkeypatch.setenv("KB_GITHUB_API_URL", server.base)
    monkeypatch.setenv("GITHUB_TOKEN", "test-token")
    return tmp_kb, fake, server


def test_refresh_meta_writes_the_metadata_file(kb_with_repos, capsys) -> None:
    root, fake, server = kb_with_repos
    assert main(["refresh-meta"]) == 0, capsys.readouterr().err
    data = json.loads((root / "data" / "meta" / "github.json").read_text(encoding="utf-8"))
    assert data["fetched"] == ghmeta.today_utc()
    assert list(data["repos"]) == ["IST-DASLab/sparsegpt", "locuslab/wanda"]
    assert set(data["repos"]["locuslab/wanda"]) == {"stars", "last_commit", "archived", "etag", "fetched_at"}
    assert {r.headers["authorization"] for r in server.requests} == {"Bearer test-token"}
    # Again: both answered 304, nothing spent, values unchanged.
    spent = fake.remaining
    assert main(["refresh-meta", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (
        sorted(summary["unchanged"]) == ["IST-DASLab/sparsegpt", "locuslab/wanda"] and fake.remaining == spent
    )
    again = json.loads((root / "data" / "meta" / "github.json").read_text(encoding="utf-8"))
    assert again == data


def test_the_site_builder_reads_what_refresh_meta_writes(kb_with_repos) -> None:
    from site_builder.inputs import load_github_meta

    root, _, _ = kb_with_repos
    assert load_github_meta(root) is None  # no file yet: the site builds without stars
    assert main(["refresh-meta"]) == 0
    meta = load_github_meta(root)
    assert meta.repos["locuslab/wanda"].stars == 812
    assert meta.repos["IST-DASLab/sparsegpt"].archived is True
    assert meta.repos["IST-DASLab/sparsegpt"].last_commit.isoformat() == "2023-11-30"


def test_refresh_meta_exits_1_when_a_repo_is_missing(kb_with_repos, capsys) -> None:
    root, fake, _ = kb_with_repos
    del fake.repos["locuslab/wanda"]
    assert main(["refresh-meta"]) == 1
    err = capsys.readouterr().err
    assert "locuslab/wanda (papers/wanda.yaml): HTTP 404" in err
    data = json.loads((root / "data" / "meta" / "github.json").read_text(encoding="utf-8"))
    assert list(data["repos"]) == ["IST-DASLab/sparsegpt"]


def test_refresh_meta_without_network_is_one_line_and_writes_nothing(
    tmp_kb: Path, monkeypatch, capsys
) -> None:
    write_record(tmp_kb, "wanda", repo="locuslab/wanda")
    monkeypatch.setenv("KB_GITHUB_API_URL", f"http://127.0.0.1:{closed_port()}")
    assert main(["refresh-meta"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("kb: error: cannot reach the GitHub API")
    assert not (tmp_kb / "data").exists()


def test_read_meta_tolerates_a_missing_or_broken_file(tmp_path: Path) -> None:
    assert ghmeta.read_meta(tmp_path / "none.json") == {"fetched": None, "repos": {}}
    bad = tmp_path / "bad.json"
    bad.write_text('{"repos": [1, 2]}', encoding="utf-8")
    assert ghmeta.read_meta(bad) == {"fetched": None, "repos": {}}
