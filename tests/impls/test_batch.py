"""`kb reproduce --commit`, `kb reproduce --all` (one session sharing the dense baseline) and `kb sweep`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kb.results import Reproduction, Sweep
from kb_cli.main import main
from reference_impls import registry
from reference_impls.harness.batch import run_papers, select_papers, split
from reference_impls.harness.fingerprint import read_book
from reference_impls.harness.session import Session
from reference_impls.registry.freshness import stale_results

SMALL = ["--model", "random-llama", "--nsamples", "4", "--seqlen", "64", "--eval-tokens", "256"]
EXPLICIT = {"model": "random-llama", "nsamples": 4, "seqlen": 64, "eval_tokens": 256}


@pytest.fixture
def kb_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "kb"
    (root / "papers").mkdir(parents=True)
    (root / "concepts").mkdir()
    monkeypatch.setenv("KB_ROOT", str(root))
    return root


def test_commit_writes_the_committed_result_with_hash_date_and_machine(kb_root: Path, capsys) -> None:
    rc = main(["reproduce", "wanda", *SMALL, "--commit"])
    assert rc in (0, 1)
    path = kb_root / "reproductions" / "wanda.json"
    assert str(path) in capsys.readouterr().err
    rep = Reproduction.model_validate_json(path.read_text(encoding="utf-8"))
    assert rep.code == registry.paper_code("wanda")  # the code that ran, file by file
    assert rep.produced is not None and rep.machine is not None and rep.machine.threads >= 1
    assert stale_results(registry.code_root(), {"wanda": rep}, {}) == []  # fresh against this checkout
    assert not (kb_root / "results").exists()
    assert main(["reproduce", "wanda", *SMALL, "--commit", "--json", "x.json"]) == 2  # one destination only


def test_all_shares_the_dense_baseline_statistics_and_identical_runs(kb_root: Path, monkeypatch) -> None:
    from reference_impls.harness import runner

    contexts = []
    real_context = runner.Context

    def spy(**kwargs):
        contexts.append(kwargs["dense_stats"])
        return real_context(**kwargs)

    monkeypatch.setattr(runner, "Context", spy)
    session = Session()
    lines: list[str] = []
    results = run_papers(["owl", "sparsegpt", "wanda"], EXPLICIT, commit_dir=kb_root / "reproductions",
                         session=session, log=lines.append)  # fmt: skip
    assert [r.paper for r in results] == ["owl", "sparsegpt", "wanda"] and all(r.record for r in results)
    owl, sgpt, wanda = (r.record for r in results)
    assert owl is not None and sgpt is not None and wanda is not None
    # OWL runs three calibration draws (pre-registered near its bound): two more token sets, its runs twice more
    assert session.computed["model"] == 1 and session.computed["data"] == 3
    assert (
        session.computed["ppl"] == 1
    )  # the dense perplexity, measured once for the three papers and every draw
    # owl at 70%: magnitude, wanda, owl-wanda in each of 3 draws; sparsegpt at 50%: magnitude, wanda, sparsegpt;
    # wanda's two are reused
    assert session.computed["run"] == 12
    assert [d.seed for d in owl.draws] == [1000, 2000] and owl.claim.draws == 3 and not wanda.draws
    assert all(d.run("dense").metrics == owl.run("dense").metrics for d in owl.draws)
    assert owl.draws[0].run("wanda").metrics != owl.run("wanda").metrics  # another calibration set
    assert wanda.run("dense").metrics == sgpt.run("dense").metrics == owl.run("dense").metrics
    assert wanda.run("wanda").metrics == sgpt.run("wanda").metrics
    assert sum("measured earlier in this process" in line for line in lines) == 4
    assert sum("already ran in this process: reused" in line for line in lines) == 2
    # every run of every paper saw the same store of dense-model statistics (OWL's outlier ratios are in it)
    # (the fingerprints stamped on commit run on their own small model, with stores of their own)
    shared = [c for c in contexts if c is contexts[0]]
    assert len(shared) == 6 and [k[0] for k in contexts[0]] == ["owl-outlier-ratios"]
    book = read_book(kb_root)
    for paper in ("owl", "sparsegpt", "wanda"):
        written = Reproduction.model_validate_json((kb_root / "reproductions" / f"{paper}.json").read_text())
        assert written.code == registry.paper_code(paper) and written.paper == paper
        assert written.fingerprint is not None and written.fingerprint.code_hash == written.code.hash
        assert book[f"reproductions/{paper}.json"]["digest"] == written.fingerprint.digest


def _only(monkeypatch, *papers: str) -> None:
    """Keep the registry's papers to `papers`: `--all` over every paper would train and prune for minutes."""
    for paper in [p for p in registry.PAPERS if p not in papers]:
        monkeypatch.delitem(registry.PAPERS, paper)


def test_all_command_exits_0_when_runs_complete_and_1_naming_a_failed_run(
    kb_root: Path, capsys, monkeypatch
) -> None:
    _only(monkeypatch, "wanda", "sparsegpt", "shortgpt")
    rc = main(["reproduce", "--all", "--kind", "weight-sparsity", *SMALL, "--commit"])
    out, _err = capsys.readouterr()
    assert rc == 0  # claims that do not hold on random weights are results, not failures
    assert "every run completed" in out and out.count("\nwanda ") == 1 and "sparsegpt" in out
    written = sorted(p.name for p in (kb_root / "reproductions").iterdir())
    assert written == ["fingerprints", "sparsegpt.json", "wanda.json"]  # the results and today's fingerprints
    assert sorted(read_book(kb_root)) == ["reproductions/sparsegpt.json", "reproductions/wanda.json"]
    rc = main(["reproduce", "--all", "--kind", "depth", *SMALL])  # 6 layers of a 2-layer model: a failed run
    out, err = capsys.readouterr()
    assert rc == 1 and "FAILED" in out and "failed: shortgpt" in out
    assert err.strip().splitlines()[-1] == "kb: error: 1 run(s) failed: shortgpt"


def test_a_kind_with_no_paper_is_a_one_line_error(capsys, monkeypatch) -> None:
    _only(monkeypatch, "wanda", "shortgpt")
    assert main(["reproduce", "--all", "--kind", "training"]) == 2
    assert (
        "no runnable paper of kind 'training'; kinds with papers: depth, weight-sparsity"
        in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["reproduce"], "name a paper, or pass --all"),
        (["reproduce", "wanda", "--all"], "do not name one"),
        (["reproduce", "--all", "--sparsity", "0.5"], "--sparsity does not go with --all"),
        (["reproduce", "--all", "--json", "x.json"], "--json does not go with --all"),
        (["reproduce", "--all", "--jobs", "0"], "--jobs must be a positive integer"),
        (["reproduce", "wanda", "--jobs", "2"], "--kind, --jobs and --launcher go with --all"),
        (["sweep", "wanda", "--layers", "1,2"], "--layers does not apply to wanda (weight-sparsity)"),
        (["sweep", "shortgpt", "--sparsity", "0.5"], "--sparsity does not apply to shortgpt (depth)"),
        (["sweep", "wanda", "--sparsity", "0.5,x"], "comma-separated numbers, got 'x'"),
        (["sweep", "wanda", "--sparsity", "0.5,0.5"], "0.5 is listed twice"),
        (["sweep", "wanda", "--sparsity", "1.0"], "[0, 1)"),
        (["sweep", "h2o", "--kv-budget", "0"], "--kv-budget must be a fraction of the prompt in (0, 1]"),
        (["sweep", "wanda", "--sparsity", "0.5", "--name", "Bad Name"], "--name 'Bad Name'"),
        (["sweep", "nonesuch", "--sparsity", "0.5"], "unknown method"),
    ],
)
def test_bad_batch_and_sweep_arguments_fail_with_one_line(capsys, argv, needle) -> None:
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and needle in err[-1] and "Traceback" not in "\n".join(err), err


def test_jobs_keep_papers_with_the_same_data_together() -> None:
    papers = select_papers()
    groups = split(papers, {}, 2)
    assert sorted(p for g in groups for p in g) == papers and len(groups) == 2
    together = {"wanda", "sparsegpt", "owl"}  # the same data settings: they share a worker and its baseline
    assert any(together <= set(g) for g in groups)
    kv = select_papers("kv-cache")
    assert {"h2o", "keyformer"} <= set(kv)
    assert all(registry.method_spec(registry.paper_spec(p).method).kind == "kv-cache" for p in kv)
    same = {
        "model": "random-llama",
        "seqlen": 128,
    }  # one data setting for all: split anyway, to use the workers
    assert sorted(len(g) for g in split(["h2o", "keyformer"], same, 2)) == [1, 1]
    assert split(["h2o", "keyformer"], same, 1) == [["h2o", "keyformer"]]


def test_sweep_runs_every_method_at_every_value_after_one_dense_baseline(kb_root: Path, capsys) -> None:
    rc = main(["sweep", "magnitude", "wanda", "--sparsity", "0.6,0.3", *SMALL, "--commit"])
    assert rc == 0
    path = kb_root / "reproductions" / "sweeps" / "sparsity-magnitude-wanda.json"
    sweep = Sweep.model_validate_json(path.read_text(encoding="utf-8"))
    assert sweep.values == [0.3, 0.6] and sweep.axis == "sparsity"
    assert [r.label for r in sweep.runs] == [
        "dense",
        "magnitude@0.3",
        "wanda@0.3",
        "magnitude@0.6",
        "wanda@0.6",
    ]
    for x, run in sweep.points("wanda"):
        assert run.metrics.size.decoder_sparsity == pytest.approx(x, abs=0.02)
    assert sweep.code == registry.sweep_code(["magnitude", "wanda"])
    assert "sparsity-magnitude-wanda on random-llama" in capsys.readouterr().out


def test_depth_sweep_measures_the_probe(tmp_path: Path, capsys) -> None:
    out = tmp_path / "depth.json"
    small = ["--model", "random-llama", "--nsamples", "2", "--seqlen", "64", "--eval-tokens", "128"]
    assert (
        main(["sweep", "shortgpt", "--layers", "1", *small, "--probe-items", "10", "--json", str(out)]) == 0
    )
    data = json.loads(out.read_text(encoding="utf-8"))
    run = data["runs"][1]
    assert run["label"] == "shortgpt@1" and len(run["outcome"]["removed_layers"]) == 1
    assert run["metrics"]["probe"]["items"] == 10 and data["config"]["probe"] is True
    capsys.readouterr()
