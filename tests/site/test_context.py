"""The pure step: records -> template data, and the papers.json export."""

from __future__ import annotations

from site_builder.context import papers_json, short_count, site_context
from site_builder.inputs import load_github_meta, load_reproductions


def _ctx(kb):
    return site_context(kb, load_github_meta(kb.root), load_reproductions(kb.root))


def test_papers_are_ordered_newest_venue_first_and_grouped_by_year(kb) -> None:
    ctx = _ctx(kb)
    years = [y["year"] for y in ctx["years"]]
    assert years == sorted(years, reverse=True) == [2024, 2023]
    assert [p["id"] for p in ctx["years"][0]["papers"]] == [
        "fixture-depth",
        "wanda",
    ]  # same venue year: newer first


def test_tags_come_in_the_fixed_axis_order_with_qualifiers(kb) -> None:
    wanda = next(p for p in _ctx(kb)["papers"] if p["id"] == "wanda")
    assert [g["axis"] for g in wanda["tags"]] == ["type", "criteria", "budget", "data", "retrain", "weight"]
    budget = wanda["tags"][2]["values"][0]
    assert budget["id"] == "sparsity" and budget["short"] == "layer"
    assert wanda["tags"][3]["values"][0]["short"] == "128 sequences"


def test_concept_values_list_the_papers_that_carry_them(kb) -> None:
    axes = {a["id"]: a for a in _ctx(kb)["axes"]}
    structured = next(v for v in axes["type"]["values"] if v["id"] == "structured")
    assert sorted(p["id"] for p in structured["papers"]) == ["fixture-depth", "fixture-width"]
    assert axes["type"]["colour"].startswith("#") and axes["type"]["fg"] in ("#ffffff", "#111111")


def test_stars_and_reproduction_appear_only_where_data_exists(kb) -> None:
    papers = {p["id"]: p for p in _ctx(kb)["papers"]}
    assert papers["wanda"]["stars"] == {
        "count": 1234,
        "text": "1.2k",
        "as_of": "2025-01-02",
        "archived": False,
        "last_commit": "2024-12-01",
    }
    assert papers["fixture-width"]["stars"] is None  # no repo field
    rep = papers["wanda"]["reproduction"]
    assert [r["ppl"] for r in rep["rows"]] == ["1234.50", "42.25", "inf"]
    assert rep["holds"] is True and rep["model"] == "fixture-model"
    assert papers["fixture-kv"]["reproduction"] is None


def test_site_builds_without_the_optional_data(kb) -> None:
    ctx = site_context(kb)
    assert all(p["stars"] is None for p in ctx["papers"])
    wanda = next(p for p in ctx["papers"] if p["id"] == "wanda")
    assert wanda["reproduction"] is None and wanda["reproduce"] == "kb reproduce wanda --model tiny-llama"


def test_papers_json_has_schema_version_every_record_and_the_vocabulary(kb) -> None:
    from kb.schema import SCHEMA_VERSION

    data = papers_json(kb, _ctx(kb))
    assert data["schema_version"] == SCHEMA_VERSION
    assert [p["id"] for p in data["papers"]] == sorted(r.paper.id for r in kb.records)
    assert [a["id"] for a in data["axes"]] == ["type", "criteria", "budget", "data", "retrain", "weight"]
    wanda = next(p for p in data["papers"] if p["id"] == "wanda")
    assert wanda["site"]["page"] == "papers/wanda/" and wanda["site"]["stars"] == 1234
    assert wanda["tags"]["budget"] == [{"value": "sparsity", "scope": "layer"}]


def test_short_count() -> None:
    assert [short_count(n) for n in (0, 999, 1000, 1234, 9999, 12345)] == [
        "0",
        "999",
        "1k",
        "1.2k",
        "10k",
        "12k",
    ]


def test_papers_json_carries_choice_qualifiers_statuses_and_reverse_related(kb) -> None:
    data = papers_json(kb, _ctx(kb))
    axes = {a["id"]: a for a in data["axes"]}
    gran = next(q for q in axes["type"]["qualifiers"] if q["name"] == "granularity")
    assert gran["of"] == ["structured"] and "depth" in gran["values"]
    assert [q["name"] for q in axes["data"]["qualifiers"]] == []  # amounts (sizes) are not facets
    retrain = {q["name"]: q for q in axes["retrain"]["qualifiers"]}
    assert retrain["method"]["of"] == ["efficient", "extensive"]  # merged over the values that allow it
    assert retrain["method"]["labels"]["lora"] == "LoRA" and retrain["method"]["label"] == "Method"
    budget = {q["name"]: q for q in axes["budget"]["qualifiers"]}
    assert budget["scope"]["labels"]["kv-cache"] == "KV cache"
    assert retrain["method"]["labels"]["continued-pretraining"] == "Continued pretraining"
    assert {s["id"] for s in data["statuses"]} >= {"conference", "preprint", "under-review"}
    papers = {p["id"]: p for p in data["papers"]}
    assert papers["fixture-depth"]["site"]["status"] == "preprint"
    assert papers["wanda"]["site"]["related_by"] == ["fixture-width"]


def test_kv_cache_reproductions_show_their_cache_columns() -> None:
    """A committed KV-cache result fills the budget, continuation perplexity and cache-size columns."""
    import json
    from pathlib import Path

    from kb.results import Reproduction
    from site_builder.context import reproduction_context

    path = Path(__file__).resolve().parents[2] / "reproductions" / "h2o.json"
    rep = Reproduction.model_validate(json.loads(path.read_text(encoding="utf-8")))
    ctx = reproduction_context(rep)
    assert ctx is not None and ctx["show"]["cache"] and not ctx["show"]["ppl"]
    for row, run in zip(ctx["rows"], rep.runs, strict=True):
        assert run.metrics.cache is not None
        assert row["cache_ppl"] == f"{run.metrics.cache.ppl:.2f}"
        assert row["cache_budget"] == (
            "all" if run.metrics.cache.budget_tokens is None else str(run.metrics.cache.budget_tokens)
        )
