"""The board's plots: the numbers taken from results (plotdata), the board rows, and reproducible SVG that reads
on a phone and in the dark scheme."""

from __future__ import annotations

import json
import re
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
from site_builder import board, plotdata, plots
from site_builder.inputs import load_reproductions, load_sweeps
from site_builder.plots import render_svg

FIXTURES = Path(__file__).resolve().parent / "fixtures"
REPO = Path(__file__).resolve().parents[2]
DATASET = json.loads((FIXTURES / "wanda.reproduction.json").read_text(encoding="utf-8"))["dataset"]


def _size(params: int = 1000, layers: int = 4) -> Size:
    return Size(params_total=params, params_non_embedding=params, params_decoder=params, weight_bytes=4 * params,
                decoder_sparsity=0.0, layers=layers)  # fmt: skip


def _run(label, method, kind, config=None, *, ppl=None, acc=None, removed=(), sublayers=(), params=1000,
         speed=None, cache=None):  # fmt: skip
    probe = Probe(task="t", items=10, choices=4, acc=acc, acc_norm=acc) if acc is not None else None
    outcome = None
    if method is not None:
        outcome = Outcome(kind=kind, removed_layers=list(removed), removed_sublayers=list(sublayers))
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
                                        "claim": {"statement": "s", "verdict": "holds"}, "figures": [f.model_dump() for f in figures]})  # fmt: skip


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
    # one figure per evaluation setting, named by it
    assert [p.figure.key for p in plots] == ["sparsity-m-fixture-text-16-8", "sparsity-m-fixture-text-64-8"]
    fig = plots[0].figure
    assert fig.title == "m, fixture-text, 2 windows of 8 tokens: perplexity vs unstructured sparsity"
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
    assert plots[1].figure.title.startswith("m, fixture-text, 8 windows of 8 tokens: ")
    # 6 points on a grid of 4 x values by 5 series: one row per point instead of a table of dashes
    data = plotdata.table(fig)
    assert data["header"] == ["series", "fraction of decoder weights pruned", "perplexity"]
    assert data["rows"][:2] == [["dense", "0", "10.00"], ["magnitude", "0.5", "100.0"]]


def test_structured_and_unstructured_sparsity_are_never_one_line():
    """LLM Surgeon's structured 20% runs and its unstructured 50% run: two figures, and its structured arms
    (another curvature, another number of shots at the same point) are not averaged into one point."""

    def surgeon(sparsity, structure, ppl, **config):
        return _weights(sparsity, ppl, "llm-surgeon", structure=structure, **config)

    runs = [DENSE, surgeon(0.2, "rows-columns", 5e6, curvature="identity", shots=1),
            surgeon(0.2, "rows-columns", 850.0, curvature="kfac", shots=1),
            surgeon(0.2, "rows-columns", 155.0, curvature="kfac", shots=2),
            surgeon(0.5, "element", 30.8, curvature="kfac", shots=2), _weights(0.5, 22.5, "sparsegpt")]  # fmt: skip
    unstructured, structured = plotdata.sparsity_figures(
        plotdata.sources({"llm-surgeon": _rep("llm-surgeon", runs)}, {})
    )
    assert unstructured.figure.title.endswith("perplexity vs unstructured sparsity")
    assert {s.label: (s.x, s.y) for s in unstructured.figure.series} == {
        "dense": ([0.0], [10.0]), "llm-surgeon": ([0.5], [30.8]), "sparsegpt": ([0.5], [22.5])}  # fmt: skip
    assert structured.figure.key == "sparsity-structured-rows-columns-m"
    assert structured.figure.title.endswith("perplexity vs structured (rows-columns) sparsity")
    assert {s.label: (s.x, s.y) for s in structured.figure.series} == {
        "dense": ([0.0], [10.0]), "llm-surgeon (curvature=identity, shots=1)": ([0.2], [5e6]),
        "llm-surgeon (curvature=kfac, shots=1)": ([0.2], [850.0]),
        "llm-surgeon (curvature=kfac, shots=2)": ([0.2], [155.0])}  # fmt: skip


def test_depth_plots_put_layers_and_sublayers_on_the_parameters_removed():
    """4 layers of 250 parameters: removing 2 layers removes half; removing two attention sublayers (50 each)
    removes a tenth, and sits there, not at x = 0. A figure with both kinds names the kind in each label."""
    runs = [DENSE, _run("lowest", "shortgpt", "depth", {"selection": "lowest"}, ppl=30.0, acc=0.6, removed=(1, 2),
                        params=500),
            *(_run(f"random-{i}", "shortgpt", "depth", {"selection": "random", "seed": i}, ppl=100.0 + i, acc=0.4,
                   removed=(i, i + 1), params=500) for i in range(3)),
            _run("attn", "what-matters", "depth", {"target": "attention"}, ppl=12.0, acc=0.68,
                 sublayers=("1.attn", "2.attn"), params=900),
            _run("block", "what-matters", "depth", {"target": "block"}, ppl=28.0, acc=0.62, removed=(1, 2),
                 params=500)]  # fmt: skip
    ppl, acc = plotdata.depth_figures(plotdata.sources({"shortgpt": _rep("shortgpt", runs)}, {}))
    assert ppl.figure.key == "depth-ppl-m" and acc.figure.key == "depth-probe-m"
    assert ppl.figure.x_label == "fraction of decoder parameters removed"
    series = {s.label: (s.x, s.y) for s in ppl.figure.series}
    assert series == {"dense": ([0.0], [10.0]), "shortgpt, layers (selection=lowest)": ([0.5], [30.0]),
                      "shortgpt, layers (selection=random)": ([0.5], [pytest.approx(101.0)]),
                      "what-matters, attention sublayers": ([pytest.approx(0.1)], [12.0]),
                      "what-matters, layers": ([0.5], [28.0])}  # fmt: skip
    assert "Shortgpt, layers (selection=random): mean of 3 runs that differ in seed." in ppl.caption
    assert {s.label: s.y for s in acc.figure.series}["shortgpt, layers (selection=random)"] == [
        pytest.approx(0.4)
    ]
    assert [s.label for s in ppl.figure.series if 0.0 in s.x] == ["dense"]  # nothing else at x = 0


def test_arms_are_told_apart_and_scans_left_out():
    """A non-numeric option that differs splits a method's series wherever its runs are; a numeric one only
    where runs share a point (elsewhere it is what moves the point); a scan at one point is left out."""
    runs = [DENSE, *(_run(f"{lr}", "rlp", "depth", {"layers": 2, "lr": lr}, ppl=ppl, removed=(1, 2), params=500)
                     for lr, ppl in ((1e-4, 40.0), (3e-4, 30.0))),
            _run("one", "rlp", "depth", {"layers": 1, "lr": 3e-4}, ppl=20.0, removed=(1,), params=750),
            *(_run(f"w{i}", "window", "depth", {"start": i}, ppl=50.0 + i, removed=(i, i + 1), params=500)
              for i in range(5)),
            _run("kv", "pruner", "depth", {"ratio": 0.25, "attention": "kv-head"}, ppl=15.0, removed=(1,), params=750),
            _run("none", "pruner", "depth", {"ratio": 0.5, "attention": "none"}, ppl=25.0, removed=(1, 2),
                 params=500)]  # fmt: skip
    (ppl,) = plotdata.depth_figures(
        plotdata.sources({"p": _rep("p", runs)}, {})
    )  # no probe: no accuracy plot
    series = {s.label: (s.x, s.y) for s in ppl.figure.series}
    assert series == {"dense": ([0.0], [10.0]), "pruner (attention=kv-head)": ([0.25], [15.0]),
                      "pruner (attention=none)": ([0.5], [25.0]), "rlp (lr=0.0001)": ([0.5], [40.0]),
                      "rlp (lr=0.0003)": ([0.25, 0.5], [20.0, 30.0])}  # fmt: skip
    assert ppl.caption.endswith("Left out: window, 5 runs at one point differing in start (a scan).")


def test_a_series_never_joins_two_kinds_of_pruning():
    run = _weights(0.5, 20.0)
    points = [
        plotdata._Point(run, "unstructured", 0.5, 20.0, "a"),
        plotdata._Point(run, "2:4", 0.6, 30.0, "a"),
    ]
    series, _notes = plotdata._series(points, plain="unstructured")  # the kind the title names goes unsaid
    assert [(s.label, s.x) for s in series] == [("wanda", [0.5]), ("wanda, 2:4", [0.6])]


def test_speed_plots_split_width_from_depth_and_prefill_from_decode():
    runs = [DENSE, _run("taylor", "llm-pruner", "width", {"importance": "taylor"}, ppl=20.0, params=800, speed=(1.2, 1.1)),
            _run("l2", "llm-pruner", "width", {"importance": "l2"}, ppl=25.0, params=800),
            _run("depth", "minitron", "width", {"axis": "depth"}, ppl=30.0, removed=(3,), params=750, speed=(1.3, 1.25))]  # fmt: skip
    unstructured = _rep("wanda", [DENSE, _weights(0.5, 20.0)])
    plots = plotdata.speed_figures(
        plotdata.sources({"llm-pruner": _rep("llm-pruner", runs), "wanda": unstructured}, {})
    )
    assert [p.figure.key for p in plots] == ["speed-prefill-width-m", "speed-decode-width-m", "speed-prefill-depth-m",
                                             "speed-decode-depth-m"]  # fmt: skip
    series = [{s.label: (s.x, s.y) for s in p.figure.series} for p in plots]
    assert series[0] == {
        "dense": ([0.0], [1.0]),
        "llm-pruner (importance=taylor)": ([pytest.approx(0.2)], [1.2]),
    }
    assert series[1]["llm-pruner (importance=taylor)"] == ([pytest.approx(0.2)], [1.1])
    assert series[3] == {
        "dense": ([0.0], [1.0]),
        "minitron": ([0.25], [1.25]),
    }  # its depth arm: the depth plots
    assert plots[0].figure.title == "m: CPU prefill speed-up vs parameters removed by width pruning"
    assert plots[0].caption.endswith("From: llm-pruner.")


def test_cache_plot_uses_the_budget_and_puts_the_full_cache_at_one():
    dense = _run("dense", None, "dense", cache=(None, 12.0))
    runs = [dense, _run("window", "window", "kv-cache", {"kv_budget": 0.2}, cache=(20, 70.0)),
            _run("sink", "window", "kv-cache", {"kv_budget": 0.2, "sink_tokens": 4}, cache=(20, 22.0)),
            _run("h2o", "h2o", "kv-cache", {"kv_budget": None, "budget_tokens": 50}, cache=(50, 15.0))]  # fmt: skip
    (plot,) = plotdata.cache_figures(plotdata.sources({"h2o": _rep("h2o", runs)}, {}))
    assert {s.label: (s.x, s.y) for s in plot.figure.series} == {
        "full cache": ([1.0], [12.0]), "h2o": ([0.5], [15.0]), "window": ([0.2], [70.0]),
        "window (sink_tokens=4)": ([0.2], [22.0])}  # fmt: skip
    assert (
        plot.figure.title
        == "m, fixture-text, 2 windows of 8 tokens: continuation perplexity vs KV cache budget"
    )


def test_committed_results_give_unique_titles_and_nothing_at_zero_by_accident():
    """Every plot the site draws from the committed results (board and paper figures) has its own title and
    file; on the board's plots only the baseline sits at x = 0, and every title names the model."""
    reps, sweeps = load_reproductions(REPO), load_sweeps(REPO)
    if not reps:
        pytest.skip("no committed reproductions")
    board_plots = plotdata.board_plots(reps, sweeps)
    figures = [p.figure for p in board_plots] + [p.figure for k, r in sorted(reps.items())
                                                 for p in plotdata.paper_plots(k, r)]  # fmt: skip
    titles = [f.title for f in figures]
    assert len(set(titles)) == len(titles), sorted(t for t in titles if titles.count(t) > 1)
    assert len({f.key for f in figures}) == len(figures)
    for fig in (p.figure for p in board_plots):
        rep = next(iter(reps.values()))
        assert fig.title.startswith(plotdata.model_title(rep.model)), fig.title
        at_zero = [s.label for s in fig.series if 0.0 in s.x]
        assert at_zero in ([], ["dense"]), (fig.key, at_zero)


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


def _crowded(n: int = 20) -> Figure:
    """n series with long labels, on a log axis spanning seven decades."""
    series = [Series(label=f"method-{i} (importance=activation, recovery=kd, lr=0.0003)", x=[0.1 * (i % 9)],
                     y=[15.0 * 10 ** (i % 7)]) for i in range(n)]  # fmt: skip
    return Figure(key="k", title="tiny-llama (SmolLM2-135M-Instruct), pydoc, 4 windows of 512 tokens: perplexity "
                  "vs parameters removed by depth pruning", x_label="fraction of decoder parameters removed",
                  y_label="perplexity", series=series, y_log=True)  # fmt: skip


def test_svg_is_reproducible_and_carries_no_date():
    fig = Figure(key="k", title="Perplexity vs sparsity", x_label="x", y_label="y", y_log=True,
                 series=[Series(label="wanda", x=[0.1, 0.5], y=[11.0, 20.0]), Series(label="dense", x=[0.0], y=[10.0])])  # fmt: skip
    first, second = render_svg(fig), render_svg(fig)
    assert first == second and first.lstrip().startswith("<?xml") and "<svg" in first
    assert "dc:date" not in first and "Matplotlib v" not in first
    assert "Perplexity vs sparsity" in first and "wanda" in first  # text stays text


def test_every_series_has_its_own_colour_and_marker_and_the_legend_fits():
    canvas = plots.draw(_crowded())
    (ax,) = canvas.axes
    pairs = [(line.get_color(), line.get_marker()) for line in ax.get_lines()]
    assert len(pairs) == 20 and len(set(pairs)) == 20
    assert len({plots.series_style(i) for i in range(49)}) == 49
    page = canvas.bbox
    for artist in (*canvas.legends, ax.title, ax.xaxis.label, ax.yaxis.label):  # nothing cut off at the edges
        box = artist.get_window_extent()
        assert (
            page.x0 - 1 <= box.x0
            and box.x1 <= page.x1 + 1
            and page.y0 - 1 <= box.y0
            and box.y1 <= page.y1 + 1
        )
    labels = [t.get_text() for t in canvas.legends[0].get_texts()]
    assert all(max(len(line) for line in label.split("\n")) <= 46 for label in labels)  # wrapped, not clipped


@pytest.mark.parametrize(("low", "high", "expected"), [(15.0, 31.0, {"15", "20", "30"}),
                                                       (15.0, 1.2e7, {"100", "10k", "1M"})])  # fmt: skip
def test_log_ticks_read_as_plain_numbers(low, high, expected):
    fig = Figure(key="k", title="t", x_label="x", y_label="y", y_log=True,
                 series=[Series(label="a", x=[0.0, 0.5], y=[low, high])])  # fmt: skip
    (ax,) = plots.draw(fig).axes
    texts = [t.get_text() for t in ax.yaxis.get_majorticklabels() + ax.yaxis.get_minorticklabels()]
    shown = {t for t in texts if t}
    assert expected <= shown
    assert not any(re.search(r"x10|×|\^|mathdefault|e\+", t) for t in texts), texts
    assert (
        plots.plain_number(40) == "40"
        and plots.plain_number(1000) == "1k"
        and plots.plain_number(2.5e6) == "2.5M"
    )


def test_text_reads_on_a_phone():
    """Shown 360 px wide (a 390 px phone less the page margins), no text in the SVG is under 11 px."""
    svg = render_svg(_crowded())
    width = float(re.search(r'viewBox="0 0 ([0-9.]+) ', svg).group(1))
    sizes = [float(v) for v in re.findall(r"font-size: ([0-9.]+)px", svg)]
    assert sizes and min(sizes) * 360 / width >= 11


def test_dark_variant_has_light_text_on_a_transparent_background():
    fig = _crowded(3)
    light, dark = render_svg(fig), render_svg(fig, dark=True)
    assert light != dark and dark == render_svg(fig, dark=True)
    assert (
        f"fill: {plots.THEMES[True]['text']}" in dark and f"fill: {plots.THEMES[False]['text']}" not in dark
    )
    for svg in (light, dark):
        assert "#ffffff" not in svg.lower() and "fill: #000000" not in svg  # no white box, no black on black


def test_two_builds_are_byte_identical_with_plots(kb, tmp_path: Path) -> None:
    from site_builder.build import render_all

    first, second = render_all(kb).pages, render_all(kb).pages
    svgs = [k for k in first if k.endswith(".svg")]
    assert svgs and first == second


def test_pages_show_each_plot_for_the_light_and_the_dark_scheme(kb) -> None:
    from site_builder.build import render_all

    pages = render_all(kb).pages
    board_page = pages["reproductions.md"]
    assert "(plots/sparsity-fixture-model.svg#only-light)" in board_page
    assert "(plots/sparsity-fixture-model.dark.svg#only-dark)" in board_page
    assert pages["plots/sparsity-fixture-model.dark.svg"] != pages["plots/sparsity-fixture-model.svg"]
