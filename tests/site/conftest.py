"""A small knowledge base for the site tests: the real vocabulary, synthetic records."""

from __future__ import annotations

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


def make_kb(root: Path, *, with_data: bool = True) -> Path:
    """Write a valid knowledge base under `root` and return it."""
    shutil.copytree(REPO / "concepts", root / "concepts")
    (root / "papers").mkdir()
    (root / "challenge").mkdir()
    for rec in yaml.safe_load((FIXTURES / "records.yaml").read_text(encoding="utf-8")):
        text = MODELINE + yaml.safe_dump(rec, sort_keys=False, allow_unicode=True)
        (root / "papers" / f"{rec['id']}.yaml").write_text(text, encoding="utf-8")
        (root / "challenge" / f"{rec['id']}.md").write_text(NOTE, encoding="utf-8")
    impl = root / "reference_impls" / "wanda.py"
    impl.parent.mkdir()
    shutil.copy(REPO / "reference_impls" / "wanda.py", impl)
    shutil.copy(REPO / "mkdocs.yml", root / "mkdocs.yml")
    (root / "docs").mkdir()
    shutil.copy(REPO / "docs" / "about.md", root / "docs" / "about.md")
    (root / "README.md").write_text("# Fixture\n\nHand-written intro.\n", encoding="utf-8")
    if with_data:
        (root / "reproductions").mkdir()
        shutil.copy(FIXTURES / "wanda.reproduction.json", root / "reproductions" / "wanda.json")
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
