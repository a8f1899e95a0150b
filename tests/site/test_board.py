"""The reproduction board and the paper page's "Measured here": every number shown is one run's metric (or a
labelled mean over random draws of one arm), the verdict leads, and the commands to run the paper are there."""

from __future__ import annotations

import re
from pathlib import Path

from kb.results import Metrics, Outcome, Probe, Reproduction, RunResult, Size
from site_builder import board
from site_builder.context import run_commands, shared_note

REPO = Path(__file__).resolve().parents[2]


def _run(label, method, kind="depth", config=None, *, ppl=None, acc=None) -> RunResult:
    size = Size(params_total=10, params_non_embedding=10, params_decoder=10, weight_bytes=40, decoder_sparsity=0.0,
                layers=4)  # fmt: skip
    probe = Probe(task="t", items=10, choices=4, acc=acc, acc_norm=acc) if acc is not None else None
    return RunResult(label=label, method=method, kind="dense" if method is None else kind, config=config or {},
                     outcome=None if method is None else Outcome(kind=kind), metrics=Metrics(ppl=ppl, probe=probe,
                     size=size))  # fmt: skip


def _rep(runs, verdict="holds", claim=None) -> Reproduction:
    from tests.site.test_plots import DATASET

    return Reproduction.model_validate({"paper": "p", "model": "m", "dataset": DATASET,
                                        "runs": [r.model_dump() for r in runs],
                                        "claim": claim or {"statement": "s", "verdict": verdict, "reason": "r"}})  # fmt: skip


def test_arms_the_claim_compares_are_never_averaged_only_draws_are():
    runs = [
        _run("dense", None, ppl=10.0, acc=0.7),
        _run("learned", "sheared", "width", {"init": "learned"}, ppl=48058.88),
        _run("random-masks", "sheared", "width", {"init": "random-masks"}, ppl=3928.16),
        _run("random-0", "shortgpt", config={"selection": "random", "seed": 0}, ppl=100.0, acc=0.4),
        _run("random-1", "shortgpt", config={"selection": "random", "seed": 1}, ppl=104.0, acc=0.5),
        _run("wanda-60", "wanda", "weight-sparsity", {"sparsity": 0.6}, ppl=30.0),
        _run(
            "wanda-70", "wanda", "weight-sparsity", {"sparsity": 0.7}, ppl=60.0
        ),  # another target: another arm
        _run("twin", "wanda", "weight-sparsity", {"sparsity": 0.6}, ppl=31.0),  # same options, other label
    ]
    numbers = board.our_numbers(_rep(runs))
    assert [(n["label"], n["text"]) for n in numbers] == [
        ("dense", "ppl 10.00, acc 0.7000"),
        ("learned", "ppl 48059"),
        ("random-masks", "ppl 3928"),
        ("random, mean of 2 draws", "ppl 102.0 (100.0-104.0), acc 0.4500 (0.4000-0.5000)"),
        ("wanda-60", "ppl 30.00"),
        ("wanda-70", "ppl 60.00"),
        ("twin", "ppl 31.00"),
    ]
    assert numbers[3]["runs"] == ["random-0", "random-1"] and numbers[3]["draws"] == 2


def test_the_verdict_is_a_word_for_every_state():
    rep = _rep([_run("dense", None, ppl=1.0)])
    assert board.verdict(rep.claim) == "holds"
    assert board.verdict(_rep([_run("dense", None, ppl=1.0)], "does not hold").claim) == "does not hold"
    assert board.verdict(_rep([_run("dense", None, ppl=1.0)], "inconclusive").claim) == "inconclusive"
    assert board.verdict(None) == "not run"


def _comparison(verdict: str, low: float, high: float, units: str = "8 windows") -> dict:
    return {"verdict": verdict, "scale": "ratio", "estimate": (low + high) / 2, "low": low, "high": high,
            "units": units}  # fmt: skip


def test_the_board_shows_the_comparison_that_decides_the_verdict_and_k():
    parts = [{"text": "a", "verdict": "holds", "comparisons": [_comparison("holds", 0.2, 0.3)]},
             {"text": "b", "verdict": "holds", "comparisons": [_comparison("holds", 0.9, 0.98)]}]  # fmt: skip
    claim = {"statement": "s", "verdict": "holds", "reason": "r", "parts": parts, "draws": 3}
    row = board.board_row(_rep([_run("dense", None, ppl=1.0)], claim=claim), {}, "p")
    assert row["interval"]["text"] == "ratio 0.94 [0.9, 0.98]"  # the one nearest its line
    assert row["interval"]["units"] == "8 windows" and row["draws"] == 3
    parts[0]["comparisons"][0] = _comparison("inconclusive", 0.95, 1.05)
    claim = {**claim, "verdict": "inconclusive"}
    row = board.board_row(_rep([_run("dense", None, ppl=1.0)], claim=claim), {}, "p")
    assert row["interval"]["text"] == "ratio 1 [0.95, 1.05]"  # the open one, not the one that holds
    exact = {
        "statement": "s",
        "verdict": "does not hold",
        "parts": [
            {
                "text": "c",
                "verdict": "does not hold",
                "comparisons": [_comparison("does not hold", 2.0, 2.0, "")],
            }
        ],
    }
    assert board.board_row(_rep([_run("dense", None, ppl=1.0)], claim=exact), {}, "p")["interval"][
        "text"
    ] == ("ratio 2 (exact)")
    assert board.board_row(_rep([_run("dense", None, ppl=1.0)]), {}, "p")["interval"] is None


def test_commands_offer_prune_only_for_methods_that_change_weights():
    weights = _rep(
        [_run("dense", None), _run("wanda", "wanda", "weight-sparsity", {"sparsity": 0.5}, ppl=2.0)]
    )
    weights = weights.model_copy(update={"paper": "wanda"})
    assert run_commands("wanda", weights) == [
        "kb reproduce wanda --model tiny-llama",
        "kb prune wanda --model tiny-llama --save pruned-wanda",
    ]
    cache = _rep([_run("dense", None), _run("h2o", "h2o", "kv-cache", {"kv_budget": 0.2})])
    assert run_commands("h2o", cache.model_copy(update={"paper": "h2o"})) == [
        "kb reproduce h2o --model tiny-llama"
    ]
    assert run_commands("x", None) == ["kb reproduce x --model tiny-llama"]


def test_a_result_from_a_batch_explains_its_short_wall_time():
    assert shared_note(0.08, 44.8) is not None and "0 s of its own" in shared_note(0.08, 44.8)
    assert shared_note(44.0, 44.8) is None and shared_note(None, 10.0) is None


def test_every_number_on_the_real_board_is_one_runs_metric_or_a_labelled_mean():
    """The committed results, as the site shows them: each arm's text is built from one run, or from runs that
    differ only by their seed and are labelled as a mean of that many draws."""
    from site_builder.inputs import load_reproductions

    reps = load_reproductions(REPO)
    assert reps, "no committed reproductions"
    for paper, rep in reps.items():
        by_label = {r.label: r for r in rep.runs}
        for arm in board.our_numbers(rep):
            runs = [by_label[label] for label in arm["runs"]]
            if len(runs) == 1:
                metrics = board._metric_values(runs[0])
                shown = dict(re.findall(r"(cont\. ppl|ppl|acc) ([^,]+)", arm["text"]))
                for name, text in shown.items():
                    assert text == board.number(metrics[name]), (paper, arm)
            else:
                assert arm["label"].endswith(f"mean of {len(runs)} draws"), (paper, arm)
                configs = [{k: v for k, v in r.config.items() if k != "seed"} for r in runs]
                assert all(c == configs[0] for c in configs), (paper, arm)
                assert len({r.config.get("seed") for r in runs}) == len(runs), (paper, arm)


def test_board_page_leads_with_the_verdict_and_the_paper_page_with_what_we_measured(kb_root: Path) -> None:
    import json

    from kb.store import load_kb
    from site_builder.build import render_all

    path = kb_root / "reproductions" / "wanda.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    dense = {
        **data["runs"][0],
        "label": "dense",
        "method": None,
        "kind": "dense",
        "config": {},
        "outcome": None,
    }
    dense["metrics"] = {**dense["metrics"], "ppl": 20.5}
    data["runs"].insert(0, dense)
    data["total_seconds"] = 0.08  # as a result written by `kb reproduce --all` that reused every run
    data["claim"]["parts"] = [{"text": "wanda vs magnitude", "verdict": "holds",
                               "comparisons": [_comparison("holds", 0.05, 0.09)]}]  # fmt: skip
    data["claim"]["draws"] = 3
    path.write_text(json.dumps(data), encoding="utf-8")
    pages = render_all(load_kb(kb_root)).pages
    page = pages["reproductions.md"]
    row = page.split('<tr id="row-wanda">')[1].split("</tr>")[0]
    cells = re.findall(r'data-label="([^"]+)"', row)
    assert cells[:2] == ["Paper", "Verdict"]
    assert '<strong class="kb-verdict kb-verdict--holds">holds</strong>' in row
    assert "dense: ppl 20.50" in row and "magnitude: ppl 1234" in row
    assert "wanda: ppl 42.25" in row and "broken: ppl inf" in row and "mean of" not in row
    assert "42.25 vs 617.25" in row  # the reason the verdict rests on
    paper = pages["papers/wanda.md"]
    measured = paper.split("<strong>Measured here.</strong>")[1].split("</div>")[0]
    assert (
        measured.index("kb-verdict--holds")
        < measured.index("Quality of each arm")
        < measured.index("Size and")
    )
    assert "wanda: ppl 42.25" in measured
    verdict_line = measured.split("Quality of each arm")[0]  # the verdict first, with its interval and K
    assert (
        "ratio 0.07 &#91;0.05, 0.09&#93; (90% interval over 8 windows), K = 3 calibration draws"
        in verdict_line
    )
    assert "ratio 0.07 [0.05, 0.09] (90%, 8 windows)" in row and "K = 3 calibration draws" in row
    assert "0 s of its own" in paper and "s in total" not in paper
