"""The board's plots: the numbers taken from results (plotdata), the board rows, and reproducible SVG."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kb.results import (
    CacheEval,
    Figure,
    Metrics,
    Outcome,
    Probe,
    Reproduction,
    RunResult,
    Series,
    Size,
    Speed,
    Sweep,
)
from site_builder import board, plotdata
from site_builder.plots import render_svg

FIXTURES = Path(__file__).resolve().parent / "fixtures"
DATASET = json.loads((FIXTURES / "wanda.reproduction.json").read_text(encoding="utf-8"))["dataset"]


def _size(params: int = 1000, layers: int = 4) -> Size:
    return Size(params_total=params, params_non_embedding=params, params_decoder=params, weight_bytes=4 * params,
                decoder_sparsity=0.0, layers=layers)  # fmt: skip


def _run(
    label, method, kind, config=None, *, ppl=None, acc=None, removed=(), params=1000, speed=None, cache=None
):
    probe = Probe(task="t", items=10, choices=4, acc=acc, acc_norm=acc) if acc is not None else None
    outcome = None if method is None else Outcome(kind=kind, removed_layers=list(removed))
    spd = None
    if speed is not None:
        spd = Speed(prompt_tokens=8, decode_tokens=8, repeats=1, threads=1, prefill_ms=1.0, decode_tokens_per_s=1.0,
                    kv_cache_bytes=0, prefill_speedup=speed[0], decode_speedup=speed[1])  # fmt: skip
    cev = None
    if cache is not None:
        budget, value = cache
        cev = CacheEval(policy="p", windows=1, prompt_tokens=100, continuation_tokens=10, budget_tokens=budget, ppl=value,
                        nll=1.0, generate_tokens=0, cache_bytes_prompt=0, cache_bytes_end=0, decode_tokens_per_s=1.0,
                        threads=1)  # fmt: skip
    return RunResult(label=label, method=method, kind=kind, config=config or {}, outcome=outcome,
                     metrics=Metrics(ppl=ppl, probe=probe, size=_size(params, 4 - len(removed)), speed=spd, cache=cev))  # fmt: skip


def _rep(paper, runs, model="m", *, seqlen=None, figures=()):
    dataset = dict(DATASET)
    if seqlen is not None:  # another data setting
        dataset = {**DATASET, "evaluation": {**DATASET["evaluation"], "tokens": seqlen}}
    return Reproduction.model_validate({"paper": paper, "model": model, "dataset": dataset, "runs": [r.model_dump() for r in runs],
                                        "claim": {"statement": "s", "holds": True}, "figures": [f.model_dump() for f in figures]})  # fmt: skip


DENSE = _run("dense", None, "dense", ppl=10.0, acc=0.7)


def _weights(sparsity, ppl, method="wanda", **config):
    return _run(method, method, "weight-sparsity", {"sparsity": sparsity, "pattern": None, **config}, ppl=ppl)


def test_sparsity_points_merge_reproductions_and_sweeps_per_setting():
    wanda = _rep("wanda", [DENSE, _weights(0.5, 100.0, "magnitude"), _weights(0.5, 20.0)])
    sgpt = _rep("sparsegpt", [DENSE, _weights(0.5, 100.0, "magnitude"), _weights(0.5, 20.0),
                              _weights(0.5, 18.0, "sparsegpt")])  # fmt: skip
    nm = _run("2:4", "wanda", "weight-sparsity", {"sparsity": 0.5, "pattern": [2, 4]}, ppl=99.0)
    owl = _rep(
        "owl",
        [DENSE, _run("owl-wanda", "owl", "allocation", {"sparsity": 0.7, "base": "wanda"}, ppl=40.0), nm],
    )
    sweep = Sweep.model_validate({"name": "sw", "model": "m", "axis": "sparsity", "values": [0.3, 0.5], "methods": ["wanda"],
                                  "dataset": DATASET, "runs": [r.model_dump() for r in (DENSE, _weights(0.3, 12.0), _weights(0.5, 22.0))]})  # fmt: skip
    other_data = _rep("elsewhere", [DENSE, _weights(0.5, 55.0)], seqlen=64)
    plots = plotdata.sparsity_figures(plotdata.sources({"wanda": wanda, "sparsegpt": sgpt, "owl": owl, "zz": other_data},
                                                       {"sw": sweep}))  # fmt: skip
    assert [p.figure.key for p in plots] == ["sparsity-m-1", "sparsity-m-2"]  # one figure per data setting
    fig = plots[0].figure
    series = {s.label: dict(zip(s.x, s.y, strict=True)) for s in fig.series}
    assert fig.series[0].label == "dense" and series["dense"] == {0.0: 10.0}
    assert series["magnitude"] == {0.5: 100.0}  # the same run in two papers: one point
    assert series["wanda"] == {
        0.3: 12.0,
        0.5: pytest.approx((20.0 + 20.0 + 22.0) / 3),
    }  # averaged with the sweep
    assert series["sparsegpt"] == {0.5: 18.0} and series["owl (base=wanda)"] == {0.7: 40.0}
    assert 99.0 not in [y for s in fig.series for y in s.y]  # N:M runs are not on the unstructured axis
    assert fig.y_log and plots[0].caption.endswith("From: owl, sparsegpt, wanda, sweep sw.")
    assert {s.label: s.y for s in plots[1].figure.series}["wanda"] == [55.0]
    assert plotdata.table(fig)["rows"][0] == ["0", "10.00", "–", "–", "–", "–"]


def test_depth_plots_count_removed_layers_and_average_random_draws():
    runs = [DENSE, _run("lowest", "shortgpt", "depth", {"selection": "lowest"}, ppl=30.0, acc=0.6, removed=(1, 2)),
            *(_run(f"random-{i}", "shortgpt", "depth", {"selection": "random", "seed": i}, ppl=100.0 + i, acc=0.4,
                   removed=(i, i + 1)) for i in range(3))]  # fmt: skip
    ppl, acc = plotdata.depth_figures(plotdata.sources({"shortgpt": _rep("shortgpt", runs)}, {}))
    assert ppl.figure.key == "depth-ppl-m" and acc.figure.key == "depth-probe-m"
    series = {s.label: (s.x, s.y) for s in ppl.figure.series}
    assert series == {"dense": ([0.0], [10.0]), "shortgpt (selection=lowest)": ([2.0], [30.0]),
                      "shortgpt (selection=random)": ([2.0], [pytest.approx(101.0)])}  # fmt: skip
    assert {s.label: s.y for s in acc.figure.series} == {"dense": [0.7], "shortgpt (selection=lowest)": [0.6],
                                                        "shortgpt (selection=random)": [pytest.approx(0.4)]}  # fmt: skip


def test_speed_plot_uses_the_fraction_of_parameters_removed():
    runs = [DENSE, _run("taylor", "llm-pruner", "width", {"importance": "taylor"}, ppl=20.0, params=800, speed=(1.2, 1.1)),
            _run("l2", "llm-pruner", "width", {"importance": "l2"}, ppl=25.0, params=800)]  # fmt: skip
    unstructured = _rep("wanda", [DENSE, _weights(0.5, 20.0)])
    (plot,) = plotdata.speed_figures(
        plotdata.sources({"llm-pruner": _rep("llm-pruner", runs), "wanda": unstructured}, {})
    )
    series = {s.label: (s.x, s.y) for s in plot.figure.series}
    assert series == {"dense": ([0.0], [1.0]), "llm-pruner (importance=taylor): prefill": ([pytest.approx(0.2)], [1.2]),
                      "llm-pruner (importance=taylor): decode": ([pytest.approx(0.2)], [1.1])}  # fmt: skip
    assert plot.caption.endswith("From: llm-pruner.")


def test_cache_plot_uses_the_budget_and_puts_the_full_cache_at_one():
    dense = _run("dense", None, "dense", cache=(None, 12.0))
    runs = [dense, _run("window", "window", "kv-cache", {"kv_budget": 0.2}, cache=(20, 70.0)),
            _run("sink", "window", "kv-cache", {"kv_budget": 0.2, "sink_tokens": 4}, cache=(20, 22.0)),
            _run("h2o", "h2o", "kv-cache", {"kv_budget": None, "budget_tokens": 50}, cache=(50, 15.0))]  # fmt: skip
    (plot,) = plotdata.cache_figures(plotdata.sources({"h2o": _rep("h2o", runs)}, {}))
    assert {s.label: (s.x, s.y) for s in plot.figure.series} == {
        "full cache": ([1.0], [12.0]), "h2o": ([0.5], [15.0]), "window": ([0.2], [70.0]),
        "window (sink_tokens=4)": ([0.2], [22.0])}  # fmt: skip


def test_no_plot_without_points():
    assert plotdata.board_plots({"wanda": _rep("wanda", [DENSE])}, {}) == []


def test_paper_figures_are_keyed_by_paper():
    fig = Figure(
        key="loss",
        title="Loss",
        x_label="step",
        y_label="loss",
        series=[Series(label="a", x=[1, 2], y=[3, 2])],
    )
    (plot,) = plotdata.paper_plots("llm-pruner", _rep("llm-pruner", [DENSE], figures=[fig]))
    assert plot.figure.key == "llm-pruner-loss" and plot.figure.series == fig.series


def test_board_numbers_merge_runs_and_show_the_dense_baseline_once():
    runs = [DENSE, _run("lowest", "shortgpt", "depth", {"selection": "lowest"}, ppl=30.0, acc=0.6, removed=(1,)),
            *(_run(f"random-{i}", "shortgpt", "depth", {"selection": "random", "seed": i}, ppl=100.0 + 2 * i, acc=0.4,
                   removed=(i,)) for i in range(3))]  # fmt: skip
    numbers = board.our_numbers(_rep("shortgpt", runs))
    assert numbers == [
        {"label": "dense", "text": "ppl 10.00, acc 0.7000"},
        {"label": "shortgpt (selection=lowest)", "text": "ppl 30.00, acc 0.6000"},
        {"label": "shortgpt (selection=random), mean of 3", "text": "ppl 102.0, acc 0.4000"},
    ]


def test_headline_is_the_papers_own_marked_result_and_a_dash_otherwise():
    raw = {"results": [
        {"model": "LLaMA-7B", "setting": {"sparsity": 0.5}, "dataset": "wikitext2", "metric": "ppl", "value": 7.26,
         "method": "magnitude", "headline": True, "source": "table 3"},  # a baseline's number: not the headline
        {"model": "LLaMA-7B", "setting": {"sparsity": 0.5}, "dataset": "wikitext2", "metric": "ppl", "value": 7.26,
         "method": "wanda", "source": "table 3"},  # not marked
        {"model": "LLaMA-7B", "setting": {"sparsity": 0.5, "pattern": None}, "dataset": "wikitext2", "metric": "ppl",
         "value": 7.26, "method": "wanda", "headline": True, "source": "table 3"},
    ]}  # fmt: skip
    assert board.headline(raw, "wanda") == {"value": "7.26 ppl", "where": "LLaMA-7B, wikitext2, 50% sparsity",
                                            "source": "table 3", "source_url": ""}  # fmt: skip
    raw["results"][2]["source"] = {"url": "https://example.org/t?a=1", "locator": "Table 3"}  # schema shape
    assert board.headline(raw, "wanda")["source"] == "Table 3"
    assert board.headline(raw, "wanda")["source_url"] == "https://example.org/t?a=1"
    raw["results"][2]["source"] = {"url": "javascript:alert(1)", "locator": "Table 3"}  # never a link
    assert board.headline(raw, "wanda")["source_url"] == ""
    assert board.headline(raw, "sparsegpt") is None
    assert board.headline({}, "wanda") is None and board.headline({"results": "junk"}, "wanda") is None
    assert board.headline({"results": [{"headline": True, "method": "wanda"}]}, "wanda") is None  # no value


def test_svg_is_reproducible_and_carries_no_date():
    fig = Figure(key="k", title="Perplexity vs sparsity", x_label="x", y_label="y", y_log=True,
                 series=[Series(label="wanda", x=[0.1, 0.5], y=[11.0, 20.0]), Series(label="dense", x=[0.0], y=[10.0])])  # fmt: skip
    first, second = render_svg(fig), render_svg(fig)
    assert first == second and first.lstrip().startswith("<?xml") and "<svg" in first
    assert "dc:date" not in first and "Matplotlib v" not in first
    assert "Perplexity vs sparsity" in first and "wanda" in first  # text stays text


def test_two_builds_are_byte_identical_with_plots(kb, tmp_path: Path) -> None:
    from site_builder.build import render_all

    first, second = render_all(kb).pages, render_all(kb).pages
    svgs = [k for k in first if k.endswith(".svg")]
    assert svgs and first == second


def test_board_and_paper_page_show_plots_tables_and_the_headline(kb, tmp_path: Path) -> None:
    from site_builder.build import render_all

    rec = next(r for r in kb.records if r.paper.id == "wanda")
    rec.loaded.data["results"] = [{"model": "LLaMA-7B", "setting": {"sparsity": 0.5}, "dataset": "wikitext2",
                                   "metric": "ppl", "value": 7.26, "method": "wanda", "headline": True,
                                   "source": {"url": "https://example.org/t", "locator": "table 3"}}]  # fmt: skip
    pages = render_all(kb).pages
    board_page = pages["reproductions.md"]
    row = next(line for line in board_page.splitlines() if line.startswith("| [Wanda](papers/wanda.md)"))
    assert "7.26 ppl (LLaMA-7B, wikitext2, 50% sparsity; [table 3](https://example.org/t))" in row
    assert "**holds**" in row and "'url'" not in board_page and "&#39;url&#39;" not in board_page
    assert "magnitude: ppl 1234<br>wanda, mean of 2: ppl inf |" in row  # two wanda runs: one merged entry
    assert "![Perplexity vs sparsity](plots/sparsity-fixture-model.svg)" in board_page
    assert "| fraction of decoder weights pruned |" in board_page
    paper = pages["papers/wanda.md"]
    assert "### Latest reproduction" in paper
    empty = board.board_row(None, {}, "sparsegpt")  # not reproduced: no numbers, headline, verdict or date
    assert (
        empty["numbers"] == []
        and empty["headline"] is None
        and empty["holds"] is None
        and empty["date"] == "–"
    )
