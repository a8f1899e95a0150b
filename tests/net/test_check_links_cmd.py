"""`kb check-links` end to end: records on disk, a local server, exit codes, JSON, --changed-only."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from localserver import Reply, Request, write_record

from kb_cli.main import main

FAST = ["--timeout", "2", "--retries", "1", "--backoff", "0.01"]


def _route(req: Request) -> Reply:
    if req.path.startswith("/ok"):
        return Reply(200, b"fine")
    if req.path == "/teapot-403":
        return Reply(403, b"bots go away")
    return Reply(404, b"gone")


@pytest.fixture
def site(tmp_kb: Path, serve, monkeypatch: pytest.MonkeyPatch, tmp_path_factory):
    monkeypatch.setenv("KB_CACHE", str(tmp_path_factory.mktemp("cache")))
    server = serve(_route)
    write_record(
        tmp_kb,
        "good",
        links={
            "paper": server.url("/ok/paper"),
            "code": [{"url": server.url("/ok/code"), "official": True}],
            "blog": [server.url("/teapot-403")],
        },
    )
    write_record(tmp_kb, "bad", links={"paper": server.url("/ok/paper"), "reviews": [server.url("/gone")]})
    return tmp_kb, server


def test_a_broken_link_fails_and_is_reported(site, tmp_path: Path, capsys) -> None:
    _root, server = site
    out = tmp_path / "links.json"
    assert main(["check-links", "--json", str(out), *FAST]) == 1
    captured = capsys.readouterr()
    assert (
        "broken" in captured.out
        and server.url("/gone") in captured.out
        and "papers/bad.yaml:" in captured.out
    )
    assert "1 broken, 1 transient" in captured.err
    rows = json.loads(out.read_text(encoding="utf-8"))
    assert all(set(r) == {"url", "verdict", "status_code", "record", "detail"} for r in rows)
    by = {(r["record"], r["url"]): (r["verdict"], r["status_code"]) for r in rows}
    assert by == {
        ("bad", server.url("/gone")): ("broken", 404),
        ("bad", server.url("/ok/paper")): ("ok", 200),
        ("good", server.url("/ok/paper")): ("ok", 200),
        ("good", server.url("/ok/code")): ("ok", 200),
        ("good", server.url("/teapot-403")): ("transient", 403),
    }
    assert server.hits("/ok/paper") == 1  # one URL, two records, one request


def test_transient_problems_alone_exit_0_and_the_cache_makes_reruns_cheap(site, capsys) -> None:
    root, server = site
    (root / "papers" / "bad.yaml").unlink()
    assert main(["check-links", *FAST]) == 0
    assert main(["check-links", *FAST]) == 0
    err = capsys.readouterr().err
    assert "(2 from cache, 0 excluded)" in err
    assert server.hits("/ok/paper") == 1 and server.hits("/teapot-403") == 2
    assert main(["check-links", "--no-cache", *FAST]) == 0
    assert server.hits("/ok/paper") == 2


def test_the_exclusion_file_is_honoured_and_validated(site, capsys) -> None:
    root, server = site
    (root / "links-exclude.yaml").write_text(
        "exclude:\n  - pattern: '/gone$'\n    reason: the test server never serves it\n", encoding="utf-8"
    )
    assert main(["check-links", *FAST]) == 0
    assert server.hits("/gone") == 0 and "1 excluded" in capsys.readouterr().err
    (root / "links-exclude.yaml").write_text(
        "exclude:\n  - pattern: '/gone$'\n    reason: ''\n", encoding="utf-8"
    )
    assert main(["check-links", *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["kb: error: links-exclude.yaml:2: give a reason (a few words) for excluding '/gone$'"]
    (root / "links-exclude.yaml").write_text(
        "exclude:\n  - pattern: '(unclosed'\n    reason: a bad regex\n", encoding="utf-8"
    )
    assert main(["check-links", *FAST]) == 2
    assert "bad pattern" in capsys.readouterr().err


def test_the_repository_exclusion_file_loads(repo_root: Path) -> None:
    from kb.links import load_exclusions

    rules = load_exclusions(repo_root / "links-exclude.yaml")
    assert rules and all(r.reason for r in rules)
    assert any(r.pattern.search("https://www.linkedin.com/pulse/x") for r in rules)


def _git(root: Path, *argv: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *argv],
        cwd=root,
        check=True,
        capture_output=True,
        timeout=30,
    )


def test_changed_only_checks_records_changed_against_the_base(site, capsys) -> None:
    root, server = site
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "base")
    write_record(root, "good", links={"paper": server.url("/ok/edited")})  # uncommitted edit
    write_record(root, "added", links={"paper": server.url("/ok/added")})  # untracked new record
    assert main(["check-links", "--changed-only", "--base", "main", *FAST]) == 0
    assert server.hits("/ok/edited") == 1 and server.hits("/ok/added") == 1
    assert server.hits("/gone") == 0 and server.hits("/ok/paper") == 0  # bad.yaml did not change
    assert "2 changed record(s) against main" in capsys.readouterr().err


def test_changed_only_with_an_unknown_base_is_one_line(site, capsys) -> None:
    root, _ = site
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "base")
    assert main(["check-links", "--changed-only", "--base", "no-such-rev", *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kb: error: git merge-base failed for base 'no-such-rev'")


@pytest.mark.parametrize("argv", [["--concurrency", "0"], ["--timeout", "soon"], ["--retries", "-1"]])
def test_bad_options_are_usage_errors(tmp_kb: Path, capsys, argv: list[str]) -> None:
    assert main(["check-links", *argv]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_changed_only_works_when_the_knowledge_base_is_a_subdirectory(
    tmp_path: Path, serve, monkeypatch, repo_root: Path, capsys
) -> None:
    import shutil

    server = serve(_route)
    kb = tmp_path / "monorepo" / "catalogue"
    shutil.copytree(repo_root / "concepts", kb / "concepts")
    (kb / "papers").mkdir()
    monkeypatch.setenv("KB_ROOT", str(kb))
    monkeypatch.setenv("KB_CACHE", str(tmp_path / "cache"))
    write_record(kb, "old", links={"paper": server.url("/gone")})
    _git(kb.parent, "init", "-q", "-b", "main")
    _git(kb.parent, "add", "-A")
    _git(kb.parent, "commit", "-q", "-m", "base")
    write_record(kb, "old", links={"paper": server.url("/ok/new")})
    assert main(["check-links", "--changed-only", "--base", "main", *FAST]) == 0
    assert server.hits("/ok/new") == 1 and server.hits("/gone") == 0
    assert "1 changed record(s)" in capsys.readouterr().err
