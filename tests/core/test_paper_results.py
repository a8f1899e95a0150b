"""Paper-reported results: the `results:` schema, its closed vocabularies and its part in provenance."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from kb.paper_results import PaperResult, Setting
from kb.vocab import load_vocabulary
from kb_cli.main import main

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data"
BASE = (DATA / "base.yaml").read_text(encoding="utf-8")
NOTE = (DATA / "base.md").read_text(encoding="utf-8")
F = "papers/demo-method.yaml"
FIRST = BASE.count("\n") + 2  # the line of the first row when `results:` is appended to BASE
ROW = 7  # lines per row written by `_row`


def _row(**over: str) -> str:
    fields = {
        "model": "LLaMA-7B",
        "setting": "{sparsity: 0.5}",
        "dataset": "wikitext2",
        "metric": "perplexity",
        "value": "6.86",
        "method": "demo-method",
        "source": "{url: https://example.org/demo/readme, locator: README table 1}",
    }
    fields.update(over)
    lines = [f"    {k}: {v}" for k, v in fields.items()]
    return "  - " + "\n".join(lines)[4:] + "\n"


def _validate(tmp_kb: Path, capsys, record: str) -> tuple[int, list[str]]:
    (tmp_kb / "papers" / "demo-method.yaml").write_text(record, encoding="utf-8")
    (tmp_kb / "challenge" / "demo-method.md").write_text(NOTE, encoding="utf-8")
    code = main(["validate"])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out.splitlines()


def test_a_valid_results_list_passes(tmp_kb, capsys):
    record = BASE + "results:\n" + _row(headline="true", key="main") + _row(method="wanda", value="7.26")
    assert _validate(tmp_kb, capsys, record) == (0, [])


def test_unknown_dataset_and_metric_are_rejected_with_a_suggestion_and_line(tmp_kb, capsys):
    record = BASE + "results:\n" + _row() + _row(dataset="wikitext", metric="ppl")
    code, lines = _validate(tmp_kb, capsys, record)
    second = FIRST + ROW
    assert code == 1
    assert lines == [
        f"{F}:{second + 2}: results[1].dataset: 'wikitext' is not a known dataset (did you mean 'wikitext2'?)",
        f"{F}:{second + 3}: results[1].metric: 'ppl' is not a known metric (did you mean 'perplexity'?)",
    ]


def test_a_far_off_dataset_lists_the_valid_ones(tmp_kb, capsys):
    code, lines = _validate(tmp_kb, capsys, BASE + "results:\n" + _row(dataset="imagenet"))
    assert code == 1
    assert len(lines) == 1 and "(valid: wikitext2, c4, ptb," in lines[0]


def test_relative_metric_needs_versus_and_keys_are_unique(tmp_kb, capsys):
    record = (
        BASE
        + "results:\n"
        + _row(metric="speedup", key="a")
        + _row(metric="speedup", versus="dense", key="a")
    )
    code, lines = _validate(tmp_kb, capsys, record)
    first = FIRST
    assert code == 1
    assert lines == [
        f"{F}:{first + 3}: results[0].versus: 'speedup' compares two methods: say which one in `versus`",
        f"{F}:{first + (ROW + 1) + 8}: results[1].key: 'a' is also the key of results[0]",
    ]


def test_headline_row_must_be_the_papers_own_and_single(tmp_kb, capsys):
    record = (
        BASE
        + "results:\n"
        + _row(method="wanda", headline="true")
        + _row(headline="true")
        + _row(headline="true", value="7.0")
    )
    code, lines = _validate(tmp_kb, capsys, record)
    assert code == 1
    assert [line.split(": ", 2)[2] for line in lines] == [
        "the headline row must be this paper's own method 'demo-method', not 'wanda'",
        "only one row can be the headline",
    ]


def test_shape_errors_name_the_field_and_line(tmp_kb, capsys):
    record = BASE + "results:\n" + _row(setting="{sparsity: 50}", colour="red")
    code, lines = _validate(tmp_kb, capsys, record)
    first = FIRST
    assert code == 1
    assert f"{F}:{first + 1}: results[0].setting.sparsity: 50.0 is not a fraction between 0 and 1" in lines[0]
    assert lines[1].startswith(f"{F}:{first + ROW}: results[0].colour: unknown field 'colour'")


def test_setting_checks_pattern_against_sparsity_and_labels_itself():
    assert Setting(pattern="2:4", sparsity=0.5).label() == "2:4"
    assert Setting(sparsity=0.7).label() == "70% unstructured"
    assert Setting(params_removed=0.2).label() == "20% params removed"
    assert Setting(kv_budget=0.2, layers_removed=3).label() == "3 layers removed, 20% KV cache"
    assert Setting().label() == "dense"
    with pytest.raises(ValidationError, match="does not match pattern 2:4"):
        Setting(pattern="2:4", sparsity=0.6)
    with pytest.raises(ValidationError, match="0 < N < M"):
        Setting(pattern="4:4")


def test_values_must_be_finite():
    base = {
        "model": "LLaMA-7B",
        "dataset": "wikitext2",
        "metric": "perplexity",
        "method": "dense",
        "source": {"url": "https://example.org/x", "locator": "Table 1"},
    }
    assert PaperResult.model_validate({**base, "value": 5.68}).value == 5.68
    with pytest.raises(ValidationError, match="finite"):
        PaperResult.model_validate({**base, "value": float("inf")})
    with pytest.raises(ValidationError):
        PaperResult.model_validate({**base, "value": 1, "model": "LLaMA 7B"})  # spaces: write hyphens


def test_vocabulary_terms_are_unique_and_metrics_have_a_direction():
    vocab = load_vocabulary(ROOT / "concepts")
    ids = [t.id for t in vocab.metrics.values]
    assert len(ids) == len(set(ids)) and {"perplexity", "accuracy", "speedup"} <= set(ids)
    assert vocab.metrics.get("perplexity").direction == "lower"
    assert vocab.metrics.get("accuracy").direction == "higher"
    assert vocab.metrics.get("speedup").relative
    assert vocab.datasets.suggest("WikiText-2") == "wikitext2"


def test_a_duplicate_term_breaks_the_vocabulary_with_its_line(tmp_path):
    import shutil

    from kb.vocab import VocabularyError

    shutil.copytree(ROOT / "concepts", tmp_path / "concepts")
    path = tmp_path / "concepts" / "metrics.yaml"
    path.write_text(
        path.read_text() + "  - id: perplexity\n    label: P\n    unit: ''\n    direction: lower\n"
        "    definition: defined a second time here.\n"
    )
    with pytest.raises(VocabularyError, match="'perplexity' is defined twice"):
        load_vocabulary(tmp_path / "concepts")
    path.unlink()
    with pytest.raises(VocabularyError, match=r"concepts/metrics\.yaml:1"):
        load_vocabulary(tmp_path / "concepts")


# ---- provenance: a number in `results:` backs the same number in the take-away ------------------

CLAIM = """takeaway: >-
  A made-up method that exists only so the tests have one valid record to break in
  controlled ways. At 50% sparsity it reaches 6.86 perplexity against 7.26 and is 2.1x faster."""
TAKEAWAY = """takeaway: >-
  A made-up method that exists only so the tests have one valid record to break in
  controlled ways. It prunes nothing and claims nothing."""


def test_quoted_numbers_backed_by_results_pass(tmp_kb, capsys):
    record = (
        BASE.replace(TAKEAWAY, CLAIM)
        + "results:\n"
        + _row(value="6.86")
        + _row(method="wanda", value="7.26")
        + _row(metric="speedup", versus="dense", value="2.1", dataset="generation")
    )
    assert _validate(tmp_kb, capsys, record) == (0, [])


def test_a_quoted_number_absent_from_results_still_fails(tmp_kb, capsys):
    record = (
        BASE.replace(TAKEAWAY, CLAIM) + "results:\n" + _row(value="6.86") + _row(method="wanda", value="7.26")
    )
    code, lines = _validate(tmp_kb, capsys, record)
    assert code == 1
    assert [line.split(": number ")[1][:6] for line in lines] == ["'2.1x'"]


def test_trailing_zeros_written_in_prose_are_matched():
    from kb.provenance import sourced_numbers
    from kb.schema import Paper
    from kb.yamlio import parse_yaml

    data = parse_yaml((BASE + "results:\n" + _row(value="26.30")).encode()).data
    paper = Paper.model_validate(data)
    assert {"26.3", "26.30", "50%"} <= sourced_numbers(paper)
