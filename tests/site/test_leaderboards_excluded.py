"""A result flagged `exclude_from_leaderboards` (a disputed number, kept as published) stays on its
paper's page and in the export, but is neither ranked on a leaderboard nor shown as a slice's dense
reference."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import kb_with_results  # tests/site/conftest.py
from pydantic import ValidationError

from kb.paper_results import PaperResult
from site_builder.leaderboards import build_slices, excluded, result_rows, results_csv

SRC = {"url": "https://example.org/table", "locator": "Table 3"}
DISPUTED = "dense value above the same table's smaller model; unconfirmed"


def _r(method, value, *, setting=None, **kw):
    return {
        "model": "LLaMA-65B",
        "setting": {"sparsity": 0.7} if setting is None else setting,
        "dataset": "wikitext2",
        "metric": "perplexity",
        "value": value,
        "method": method,
        "source": dict(SRC),
        **kw,
    }


RESULTS = {
    "wanda": [
        _r("dense", 4.77, setting={}, exclude_from_leaderboards=DISPUTED),
        _r("magnitude", 46.89),
        _r("wanda", 15.23),
        _r("sparsegpt", 10.45),
        _r("fixture-depth", 99.0, exclude_from_leaderboards="a ranked row can be disputed too"),
    ],
    "fixture-depth": [
        _r("dense", 3.53, setting={}),
    ],
}


@pytest.fixture
def rows(kb_root: Path):
    return result_rows(kb_with_results(kb_root, RESULTS))


def test_an_excluded_number_is_neither_ranked_nor_a_dense_reference(rows):
    (board,) = build_slices(rows)
    assert sorted(r.result.method for r in board.rows) == ["magnitude", "sparsegpt", "wanda"]
    assert [(r.paper, r.result.value) for r in board.dense] == [("fixture-depth", 3.53)]
    assert all(not excluded(r.result) for r in [*board.rows, *board.dense])


def test_an_excluded_number_stays_on_its_page_and_in_the_export(rows):
    flagged = [r for r in rows if excluded(r.result)]
    assert [(r.result.method, r.result.value) for r in flagged] == [("dense", 4.77), ("fixture-depth", 99.0)]
    assert flagged[0].result.exclude_from_leaderboards == DISPUTED
    assert all(r.slice_id is None for r in flagged)
    assert "4.77" in results_csv(rows)


def test_the_reason_is_one_line_of_text():
    base = _r("dense", 4.77, setting={})
    assert (
        PaperResult.model_validate(
            {**base, "exclude_from_leaderboards": f"  {DISPUTED} "}
        ).exclude_from_leaderboards
        == DISPUTED
    )
    for bad in ("", "two\nlines", True):
        with pytest.raises(ValidationError):
            PaperResult.model_validate({**base, "exclude_from_leaderboards": bad})


def test_the_disputed_owl_dense_value_is_off_the_real_leaderboards():
    from kb.store import load_kb

    repo = Path(__file__).resolve().parents[2]
    rows = result_rows(load_kb(repo))
    owl65 = [
        r for r in rows if r.paper == "owl" and r.result.model == "LLaMA-65B" and r.result.method == "dense"
    ]
    assert [r.result.value for r in owl65] == [4.77]
    assert excluded(owl65[0].result)
    for board in build_slices(rows):
        assert owl65[0] not in board.rows and owl65[0] not in board.dense
