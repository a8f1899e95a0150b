"""`kb build` end to end: options, --check, refusal on problems, atomic output, one full mkdocs build."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from kb_cli.main import main


def test_no_mkdocs_renders_docs_and_refreshes_committed_files(kb_root: Path, tmp_path: Path, capsys) -> None:
    docs = tmp_path / "docs-out"
    assert main(["build", "--no-mkdocs", "--docs-out", str(docs)]) == 0
    assert (docs / "papers" / "wanda.md").is_file() and (docs / "papers.json").is_file()
    assert not (kb_root / "site").exists()
    assert "<!-- BEGIN GENERATED: papers -->" in (kb_root / "README.md").read_text(encoding="utf-8")
    assert (kb_root / "docs" / "badges" / "type-structured.svg").is_file()
    assert (kb_root / "schema" / "paper.schema.json").is_file()
    assert "updated README.md" in capsys.readouterr().err


def test_check_lists_stale_files_and_writes_nothing(kb_root: Path, capsys) -> None:
    before = (kb_root / "README.md").read_text(encoding="utf-8")
    assert main(["build", "--check"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert "README.md: stale; run `kb build`" in err
    assert "schema/paper.schema.json: stale; run `kb build`" in err
    assert (kb_root / "README.md").read_text(encoding="utf-8") == before
    assert not (kb_root / "docs" / "badges").exists() and not (kb_root / "docs" / "generated").exists()

    assert main(["build", "--no-mkdocs"]) == 0
    assert main(["build", "--check"]) == 0
    # A record change makes the README stale again; an orphan badge is reported too.
    rec = kb_root / "papers" / "fixture-kv.yaml"
    rec.write_text(
        rec.read_text(encoding="utf-8").replace("Fixture cache eviction", "Fixture KV eviction"),
        encoding="utf-8",
    )
    (kb_root / "docs" / "badges" / "type-gone.svg").write_text("<svg/>", encoding="utf-8")
    capsys.readouterr()
    assert main(["build", "--check"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "README.md: stale; run `kb build`",
        "docs/badges/type-gone.svg: stale; run `kb build`",
    ]
    assert main(["build", "--no-mkdocs"]) == 0
    assert not (kb_root / "docs" / "badges" / "type-gone.svg").exists()


def test_site_only_leaves_committed_files_alone(kb_root: Path, tmp_path: Path) -> None:
    assert main(["build", "--no-mkdocs", "--site-only", "--docs-out", str(tmp_path / "d")]) == 0
    assert (kb_root / "README.md").read_text(encoding="utf-8") == "# Fixture\n\nHand-written intro.\n"
    assert not (kb_root / "schema").exists()


def test_refuses_to_build_a_knowledge_base_with_problems(kb_root: Path, capsys) -> None:
    (kb_root / "challenge" / "fixture-kv.md").unlink()
    assert main(["build", "--no-mkdocs"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kb: error: refusing to build: papers/fixture-kv.yaml")
    assert not (kb_root / "docs" / "generated").exists()


def test_malformed_optional_data_is_one_line_error(kb_root: Path, capsys) -> None:
    (kb_root / "reproductions" / "wanda.json").write_text(
        '{"paper": "wanda", "results": []}', encoding="utf-8"
    )
    assert main(["build", "--no-mkdocs"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kb: error: reproductions/wanda.json: ")


def _edit_reproduction(kb_root: Path, edit) -> None:
    path = kb_root / "reproductions" / "wanda.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data), encoding="utf-8")


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda d: d.pop("claim"), "reproductions/wanda.json: claim: Field required"),
        (
            lambda d: d["runs"][1]["metrics"].update(ppl="thirty"),
            "runs.1.metrics.ppl: Input should be a valid number",
        ),
        (
            lambda d: d["runs"][0]["metrics"]["size"].pop("layers"),
            "runs.0.metrics.size.layers: Field required",
        ),
        (
            lambda d: d["claim"].update(verdict="maybe"),
            "claim.verdict: Input should be 'holds', 'does not hold' or",
        ),
    ],
)
def test_hand_edited_reproduction_names_file_and_field(kb_root: Path, capsys, edit, needle) -> None:
    _edit_reproduction(kb_root, edit)
    docs = kb_root / "docs" / "generated"
    assert main(["build", "--no-mkdocs"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not docs.exists()


def test_unwritable_outputs_are_refused_before_rendering(kb_root: Path, tmp_path: Path, capsys) -> None:
    afile = tmp_path / "file"
    afile.write_text("x")
    for argv in (["build", "--out", str(afile / "site")], ["build", "--no-mkdocs", "--docs-out", str(afile)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is a file, not a directory" in err[0], err
    assert not (kb_root / "docs" / "generated").exists() and not (kb_root / "site").exists()
    assert (kb_root / "README.md").read_text(encoding="utf-8") == "# Fixture\n\nHand-written intro.\n"


def test_disk_full_during_build_keeps_the_previous_output(
    kb_root: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    import errno

    import site_builder.build

    docs = tmp_path / "docs"
    assert main(["build", "--no-mkdocs", "--site-only", "--docs-out", str(docs)]) == 0
    before = sorted(p.relative_to(docs) for p in docs.rglob("*"))

    def full(pages, target):
        (target / "half.md").write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device", str(target / "half.md"))

    monkeypatch.setattr(site_builder.build, "write_docs", full)
    capsys.readouterr()
    assert main(["build", "--no-mkdocs", "--site-only", "--docs-out", str(docs)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0], err
    assert sorted(p.relative_to(docs) for p in docs.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs", "kb"]  # no temporary directory left


def test_usage_errors_exit_2(kb_root: Path, capsys) -> None:
    assert main(["build", "--check", "--no-mkdocs"]) == 2
    assert main(["build", "--out", str(kb_root / "x"), "--docs-out", str(kb_root / "x" / "docs")]) == 2


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        for key in ("href", "src"):
            if a.get(key) and tag in ("a", "link", "script", "img"):
                self.links.append(a[key])


def _parse(path: Path) -> _Links:
    p = _Links()
    p.feed(path.read_text(encoding="utf-8"))
    return p


@pytest.mark.slow
def test_full_build_produces_a_site_whose_internal_links_resolve(kb_root: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    assert main(["build", "--out", str(site), "--docs-out", str(tmp_path / "docs")]) == 0
    for page in (
        "index.html",
        "tables/index.html",
        "all-papers/index.html",
        "reproductions/index.html",
        "challenges/index.html",
        "about/index.html",
        "papers/wanda/index.html",
        "concepts/type/index.html",
        "papers.json",
        "papers.bib",
        "search/search_index.json",
    ):
        assert (site / page).is_file(), page
    parsed = {p: _parse(p) for p in site.rglob("*.html")}
    del parsed[site / "404.html"]  # absolute links: mkdocs cannot know where a 404 page is served from
    checked = 0
    for page, links in parsed.items():
        for link in links.links:
            if urlsplit(link).scheme or link.startswith(("mailto:", "//")):
                continue
            parts = urlsplit(link)  # links into the filter carry a query (?type=structured)
            target, frag = parts.path, parts.fragment
            dest = (page.parent / target).resolve() if target else page
            if dest.is_dir():
                dest = dest / "index.html"
            assert dest.is_file(), f"{page.relative_to(site)} links to missing {link}"
            if frag and dest.suffix == ".html":
                assert frag in parsed[dest].ids, f"{page.relative_to(site)} links to missing anchor {link}"
            checked += 1
    assert checked > 100
    html = (site / "papers" / "fixture-depth" / "index.html").read_text(encoding="utf-8")
    assert "<script>alert" not in html and "<img" not in html
    assert (
        "<title>Fixture &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; *depth* | pruning - pruning-kb</title>"
        in html
    )
    assert json.loads((site / "papers.json").read_text(encoding="utf-8"))["schema_version"] >= 1
    assert not list(site.rglob("*.md"))
    table_links = set(parsed[site / "tables" / "index.html"].links)
    assert {
        f"../papers/{p.stem}/" for p in (kb_root / "papers").glob("*.yaml")
    } <= table_links  # out of the navigation, every paper is one click from "Papers by year"


@pytest.mark.slow
def test_a_failed_mkdocs_build_leaves_the_previous_site_intact(kb_root: Path, tmp_path: Path, capsys) -> None:
    site, docs = tmp_path / "site", tmp_path / "docs"
    assert main(["build", "--out", str(site), "--docs-out", str(docs), "--site-only"]) == 0
    before = sorted(p.relative_to(site) for p in site.rglob("*"))
    docs_before = (docs / "index.md").read_text(encoding="utf-8")
    (kb_root / "docs" / "about.md").write_text("# About\n\n[broken](missing-page.md)\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["build", "--out", str(site), "--docs-out", str(docs), "--site-only"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mkdocs build failed" in err[0] and "missing-page.md" in err[0]
    assert sorted(p.relative_to(site) for p in site.rglob("*")) == before
    assert (docs / "index.md").read_text(encoding="utf-8") == docs_before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert re.search(r"about", str(before))
