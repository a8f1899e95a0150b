"""Papers deliberately left out (`data/excluded-papers.yaml`) stay out: no record under papers/ has one of
their arXiv ids, and each exclusion names its paper and says why."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
EXCLUDED = ROOT / "data" / "excluded-papers.yaml"


def _excluded() -> list[dict]:
    return yaml.safe_load(EXCLUDED.read_text(encoding="utf-8"))["excluded"]


def test_each_exclusion_names_the_paper_and_gives_a_reason():
    entries = _excluded()
    assert entries
    for e in entries:
        assert e["title"].strip() and len(e["reason"].split()) >= 10, e
        assert e["identifiers"]["arxiv"], e
        assert e.get("sources"), e


def test_no_excluded_paper_is_in_the_catalogue():
    excluded = {str(e["identifiers"]["arxiv"]): e["title"] for e in _excluded()}
    found = []
    for path in sorted((ROOT / "papers").glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        ids = data.get("identifiers") or {}
        arxiv = str(ids.get("arxiv", "")).split("v")[0]
        if arxiv in excluded:
            found.append(f"{path.name}: arXiv {arxiv} ({excluded[arxiv]}) is listed in {EXCLUDED.name}")
    assert found == [], "\n".join(found)
