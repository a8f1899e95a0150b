"""A small knowledge base for the site tests: the real vocabulary, synthetic records."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
MODELINE = "# yaml-language-server: $schema=../schema/paper.schema.json\n"
NOTE = (
    "A fixture challenge note with **Markdown**, a [safe link](https://example.org/challenge) and "
    "enough words to pass the minimum length of a challenge note.\n"
)


def stamp_reproduction(src: Path, dest: Path, root: Path) -> None:
    """Copy a reproduction fixture, recording the content hash of the code under `root` (as a fresh run would)."""
    from reference_impls.registry import paper_code

    data = json.loads(src.read_text(encoding="utf-8"))
    data["code"] = paper_code(data["paper"], root).model_dump(mode="json")
    dest.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def make_kb(root: Path, *, with_data: bool = True) -> Path:
    """Write a valid knowledge base under `root` and return it."""
    shutil.copytree(REPO / "concepts", root / "concepts")
    (root / "papers").mkdir()
    (root / "challenge").mkdir()
    for rec in yaml.safe_load((FIXTURES / "records.yaml").read_text(encoding="utf-8")):
        text = MODELINE + yaml.safe_dump(rec, sort_keys=False, allow_unicode=True)
        (root / "papers" / f"{rec['id']}.yaml").write_text(text, encoding="utf-8")
        (root / "challenge" / f"{rec['id']}.md").write_text(NOTE, encoding="utf-8")
    # the code the reproductions depend on (their content hash is checked by `kb build --check`)
    shutil.copytree(REPO / "reference_impls", root / "reference_impls",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))  # fmt: skip
    shutil.copy(REPO / "mkdocs.yml", root / "mkdocs.yml")
    (root / "docs").mkdir()
    shutil.copy(REPO / "docs" / "about.md", root / "docs" / "about.md")
    (root / "README.md").write_text("# Fixture\n\nHand-written intro.\n", encoding="utf-8")
    if with_data:
        (root / "reproductions").mkdir()
        stamp_reproduction(FIXTURES / "wanda.reproduction.json", root / "reproductions" / "wanda.json", root)
        (root / "data" / "meta").mkdir(parents=True)
        shutil.copy(FIXTURES / "github.json", root / "data" / "meta" / "github.json")
    return root


@pytest.fixture
def kb_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = make_kb(tmp_path / "kb")
    monkeypatch.setenv("KB_ROOT", str(root))
    return root


@pytest.fixture
def kb(kb_root: Path):
    from kb.checks import check_all
    from kb.store import load_kb

    loaded = load_kb(kb_root)
    assert check_all(loaded) == []
    return loaded


def kb_with_results(root: Path, results: dict[str, list[dict]]):
    """Replace the `results:` of the fixture records named in `results`, check the knowledge base is valid and
    return it loaded: what the leaderboard tests start from."""
    from kb.checks import check_all
    from kb.store import load_kb

    for pid, rows in results.items():
        path = root / "papers" / f"{pid}.yaml"
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        data["results"] = rows
        path.write_text(
            MODELINE + yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8"
        )
    kb = load_kb(root)
    assert check_all(kb) == []
    return kb


def table_rows(html: str) -> list[list[str]]:
    """The rows of the HTML tables in `html` (header rows included), each as its cells' inner HTML: how the
    tests read the tables of the pages written as raw HTML (paper pages, leaderboards, findings)."""
    rows = re.findall(r"<tr(?: [^>]*)?>(.*?)</tr>", html, flags=re.S)
    return [re.findall(r"<t[dh](?: [^>]*)?>(.*?)</t[dh]>", row, flags=re.S) for row in rows]
