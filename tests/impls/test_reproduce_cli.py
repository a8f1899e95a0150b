"""`kb reproduce` / `kb prune` through `kb_cli.main.main`: results, saved models, and every bad-input path."""

from __future__ import annotations

import json

import pytest
import torch

from kb_cli.main import main
from reference_impls import registry

SMALL = ["--model", "random-llama", "--nsamples", "4", "--seqlen", "64", "--eval-tokens", "256"]


def _one_line_error(capsys, argv, *, code=2):
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == code
    errors = [line for line in err if line.startswith("kb: error: ")]
    assert len(errors) == 1 and err[-1] == errors[0] and "Traceback" not in "".join(err), (
        err
    )  # progress may precede
    return errors[0]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["reproduce", "nonesuch"], "runnable papers: " + ", ".join(sorted(registry.PAPERS))),
        (["reproduce", "wanda", "--layers", "2"], "--layers does not apply to wanda (weight-sparsity)"),
        (["reproduce", "shortgpt", "--sparsity", "0.5"], "--sparsity does not apply to shortgpt (depth)"),
        (["reproduce", "owl", "--pattern", "2:4"], "--pattern does not apply to owl"),
        (["reproduce", "shortgpt", "--layers", "0"], "--layers must be a positive integer"),
        (["reproduce", "shortgpt", "--set", "selection=middle"], "shortgpt option selection"),
        (["reproduce", "owl", "--set", "base=magnitude"], "owl option base"),
        (["reproduce", "owl", "--set", "base=sparsegpt"], "fixed by run 'owl-wanda'"),
        (["prune", "magnitude", "--layers", "3", "--save", "x"], "--layers does not apply to magnitude"),
        (["reproduce", "wanda", "--pattern", "3:2"], "0 < N < M"),
        (["reproduce", "wanda", "--pattern", "a:b"], "malformed"),
        (["reproduce", "wanda", "--pattern", "0:4"], "0 < N < M"),
        (["reproduce", "wanda", "--sparsity", "1"], "[0, 1)"),
        (["reproduce", "wanda", "--sparsity", "-0.2"], "[0, 1)"),
        (["reproduce", "wanda", "--sparsity", "half"], "invalid float"),
        (["reproduce", "wanda", "--set", "nonsense=1"], "wanda option nonsense"),
        (["reproduce", "wanda", "--set", "scope=column"], "wanda option scope"),
        (["reproduce", "sparsegpt", "--set", "blocksize=0"], "sparsegpt option blocksize"),
        (["reproduce", "wanda", "--nsamples", "0"], "--nsamples"),
        (["reproduce", "wanda", "--seqlen", "512", "--eval-tokens", "100"], "--eval-tokens"),
        (["reproduce", "wanda", "--pattern", "2:4", "--sparsity", "0.5"], "not allowed with"),
        (["prune", "nonesuch", "--save", "x"], "unknown method"),
        (["prune", "h2o", "--save", "x"], "h2o is a KV-cache eviction policy: it changes no weight"),
        (["prune", "window", "--save", "x"], "no pruned model to save"),
        (["reproduce", "h2o", "--kv-budget", "0"], "--kv-budget must be a fraction of the prompt in (0, 1]"),
        (["reproduce", "keyformer", "--kv-budget", "1.5"], "--kv-budget must be"),
        (
            ["reproduce", "wanda", "--kv-budget", "0.5"],
            "--kv-budget does not apply to wanda (weight-sparsity)",
        ),
        (
            ["reproduce", "h2o", "--sparsity", "0.5"],
            "--sparsity does not apply to h2o (kv-cache); it takes --kv-budget",
        ),
        (["reproduce", "keyformer", "--set", "tau_init=0"], "keyformer option tau_init"),
        (["reproduce", "h2o", "--set", "recent_share=2"], "h2o option recent_share"),
        (["prune", "wanda"], "--save"),
    ],
)
def test_bad_arguments_fail_fast_with_one_line(capsys, argv, needle):
    assert needle in _one_line_error(capsys, argv)


def test_bad_dataset_files(capsys, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    binary = tmp_path / "latin1.txt"
    binary.write_bytes("caf\xe9 ".encode("latin-1") * 100)
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("just a few words\nand another line\n")
    out = tmp_path / "r.json"
    for path, needle in [(empty, "is empty"), (binary, "not UTF-8"), (tmp_path / "missing.txt", "neither"),
                         (tmp_path, "neither"), (tiny, "tokens")]:  # fmt: skip
        line = _one_line_error(
            capsys, ["reproduce", "wanda", *SMALL, "--dataset", str(path), "--json", str(out)]
        )
        assert needle in line
    assert not out.exists()


def test_seqlen_beyond_model_context(capsys, tmp_path):
    argv = [
        "reproduce",
        "wanda",
        "--model",
        "random-llama",
        "--seqlen",
        "2048",
        "--eval-tokens",
        "4096",
        "--no-save",
    ]
    assert "context of 1024" in _one_line_error(capsys, argv)


def test_unknown_model_paths(capsys, tmp_path):
    assert "does not exist" in _one_line_error(
        capsys, ["prune", "wanda", "--model", "./no/such", "--save", str(tmp_path / "o")]
    )
    assert "no config.json" in _one_line_error(
        capsys, ["prune", "wanda", "--model", str(tmp_path), "--save", str(tmp_path / "o")]
    )
    assert not (tmp_path / "o").exists()


def test_reproduce_writes_result_record(capsys, tmp_path):
    from kb.results import Reproduction

    out = tmp_path / "sub" / "r.json"
    rc = main(["reproduce", "wanda", *SMALL, "--json", str(out)])
    captured = capsys.readouterr()
    assert rc in (0, 1)  # random weights: the claim may or may not hold, the exit code says which
    record = json.loads(out.read_text())
    Reproduction.model_validate(record)  # the reader's model accepts what the writer wrote
    assert [r["label"] for r in record["runs"]] == ["dense", "magnitude", "wanda"]
    assert set(record["versions"]) >= {"python", "torch", "transformers", "kb"}
    assert (record["claim"]["verdict"] == "holds") == (rc == 0) and "wanda" in record["claim"]["reason"]
    assert record["claim"]["parts"] and record["claim"]["parts"][0]["comparisons"][0]["units"] == "4 windows"
    assert record["config"]["target"] == {"sparsity": 0.5}  # the paper's default target
    for r in record["runs"][1:]:
        assert r["config"]["sparsity"] == 0.5 and r["metrics"]["size"]["decoder_sparsity"] == pytest.approx(
            0.5
        )
        assert r["outcome"]["kind"] == "weight-sparsity" and r["metrics"]["speed"] is None
    assert "wanda" in captured.out and "ppl" in captured.out and "verdict:" in captured.out
    assert str(out) in captured.err


def test_reproduce_pattern_and_set(tmp_path, capsys):
    out = tmp_path / "r.json"
    main(["reproduce", "wanda", *SMALL, "--pattern", "2:4", "--set", "scope=matrix", "--json", str(out)])
    record = json.loads(out.read_text())
    wanda = record["runs"][-1]
    assert wanda["config"] == {"sparsity": 0.5, "pattern": [2, 4], "scope": "matrix"}
    assert record["runs"][1]["config"]["scope"] == "matrix"  # magnitude keeps its own default
    capsys.readouterr()


def test_reproduce_depth_paper_records_structure_probe_and_speed(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = main(["reproduce", "shortgpt", *SMALL, "--layers", "1", "--probe-items", "20", "--json", str(out)])
    assert rc in (0, 1)
    record = json.loads(out.read_text())
    labels = [r["label"] for r in record["runs"]]
    assert labels == ["dense", "lowest-bi", *(f"random-{i}" for i in range(3)), "highest-bi"]
    assert "the 1 layers with the lowest Block Influence" in record["claim"]["statement"]
    dense, low = record["runs"][0], record["runs"][1]
    assert dense["metrics"]["size"]["layers"] == 2 and low["metrics"]["size"]["layers"] == 1
    assert (
        len(low["outcome"]["removed_layers"]) == 1 and len(low["outcome"]["details"]["block_influence"]) == 2
    )
    assert low["metrics"]["size"]["params_decoder"] == dense["metrics"]["size"]["params_decoder"] // 2
    assert low["metrics"]["probe"]["items"] == 20 and dense["metrics"]["probe"]["choices"] == 4
    assert low["metrics"]["speed"]["prefill_speedup"] > 0 and record["runs"][2]["metrics"]["speed"] is None
    # half the layers: half the KV cache, measured
    assert low["metrics"]["speed"]["kv_cache_bytes"] * 2 == dense["metrics"]["speed"]["kv_cache_bytes"]
    capsys.readouterr()


def test_interrupted_json_write_leaves_nothing(tmp_path, capsys, monkeypatch):
    import kb.fsutil

    def interrupt(_fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(kb.fsutil.os, "fsync", interrupt)
    out = tmp_path / "r.json"
    assert main(["reproduce", "wanda", *SMALL, "--json", str(out)]) == 130
    assert list(tmp_path.iterdir()) == []
    capsys.readouterr()


def test_prune_saves_loadable_model_and_refuses_overwrite(tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    save = tmp_path / "pruned"
    assert main(["prune", "sparsegpt", *SMALL, "--pattern", "2:4", "--save", str(save)]) == 0
    model = AutoModelForCausalLM.from_pretrained(save)
    tok = AutoTokenizer.from_pretrained(save)
    assert tok("hi")["input_ids"] == [104, 105]
    for layer in model.model.layers:
        w = layer.mlp.down_proj.weight
        assert ((w == 0).reshape(w.shape[0], -1, 4).sum(-1) == 2).all()
    assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()
    capsys.readouterr()
    assert "already exists" in _one_line_error(capsys, ["prune", "wanda", *SMALL, "--save", str(save)])
    assert main(["prune", "magnitude", *SMALL, "--sparsity", "0.3", "--save", str(save), "--force"]) == 0
    w = AutoModelForCausalLM.from_pretrained(save).model.layers[0].self_attn.q_proj.weight
    assert int((w == 0).sum()) == int(w.numel() * 0.3)


def test_interrupted_prune_leaves_no_directory(tmp_path, capsys, monkeypatch):
    from transformers import PreTrainedTokenizerFast

    def interrupt(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(PreTrainedTokenizerFast, "save_pretrained", interrupt)
    assert main(["prune", "wanda", *SMALL, "--save", str(tmp_path / "pruned")]) == 130
    assert list(tmp_path.iterdir()) == []
    capsys.readouterr()


def test_hub_dataset_without_datasets_package_is_one_line(capsys, no_datasets):
    line = _one_line_error(capsys, ["reproduce", "wanda", *SMALL, "--dataset", "wikitext2", "--no-save"])
    assert "datasets" in line


def test_registry_run_command():
    from reference_impls import registry

    assert registry.run_command("wanda") == "kb reproduce wanda --model tiny-llama"
    assert registry.run_command("owl") == "kb reproduce owl --model tiny-llama"
    assert registry.run_command("h2o") == "kb reproduce h2o --model tiny-llama"
    assert registry.run_command("flash-llm") == "kb reproduce flash-llm --model tiny-llama"


def test_a_record_without_code_is_a_one_line_error(capsys, monkeypatch):
    """Every record has code today; a new record without it (simulated) says so before anything heavy."""
    monkeypatch.delitem(registry.PAPERS, "besa")
    assert registry.run_command("besa") is None
    assert "no runnable implementation yet" in _one_line_error(capsys, ["reproduce", "besa"])


def test_reproduce_kv_cache_paper_records_the_cache_evaluation(tmp_path, capsys):
    from kb.results import Reproduction

    out = tmp_path / "h2o.json"
    argv = ["reproduce", "h2o", "--model", "random-llama", "--seqlen", "96", "--eval-tokens", "192",
            "--kv-budget", "0.25", "--json", str(out)]  # fmt: skip
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc in (0, 1)
    record = Reproduction.model_validate_json(out.read_text())
    assert [r.label for r in record.runs] == ["dense", "window", "sink", "h2o"]
    assert record.config["target"] == {"kv_budget": 0.25}
    dense = record.run("dense").metrics
    assert dense.ppl is None and dense.cache.policy == "full" and dense.cache.budget_tokens is None
    assert (
        dense.cache.prompt_tokens == 32 and dense.cache.continuation_tokens == 64 and dense.cache.windows == 2
    )
    for label in ("window", "sink", "h2o"):
        run = record.run(label)
        assert run.kind == "kv-cache" and run.config["kv_budget"] == 0.25 and run.metrics.ppl is None
        assert run.outcome.cache_policy["name"] == ("sink" if label == "sink" else label)
        c = run.metrics.cache
        assert (c.budget_tokens, c.recent_tokens) == ((8, 8) if label == "window" else (8, 4))
        assert c.cache_bytes_prompt == c.cache_bytes_end < dense.cache.cache_bytes_end
        assert c.decode_speedup is not None and c.ppl > 0
    assert record.claim.holds == (rc == 0) and "continuation ppl h2o" in record.claim.reason
    assert "cont. ppl" in captured.out and "8/32" in captured.out


def test_extra_runs_only_with_all_runs(tmp_path, capsys):
    """OWL's SparseGPT pair is context the claim does not use: left out unless asked for."""
    quick, full = tmp_path / "quick.json", tmp_path / "full.json"
    main(["reproduce", "owl", *SMALL, "--json", str(quick)])
    main(["reproduce", "owl", *SMALL, "--all-runs", "--json", str(full)])
    labels = [r["label"] for r in json.loads(quick.read_text())["runs"]]
    assert labels == ["dense", "magnitude", "wanda", "owl-wanda"]
    record = json.loads(full.read_text())
    assert [r["label"] for r in record["runs"]] == [*labels, "sparsegpt", "owl-sparsegpt"]
    assert record["config"]["all_runs"] is True
    # OWL runs 3 calibration draws; the further draws repeat only the arms the claim reads
    assert [d["seed"] for d in record["draws"]] == [1000, 2000]
    assert all([r["label"] for r in d["runs"]] == labels for d in record["draws"])
    capsys.readouterr()


def test_paper_figures_come_from_the_runs(tmp_path, capsys, monkeypatch):
    """A paper's `figures` hook sees every run's metrics and outcome; its plots land in the record."""
    import dataclasses

    from kb.results import Figure, Reproduction, Series
    from reference_impls import registry

    def figures(r: registry.Results) -> list[Figure]:
        labels = ["magnitude", "wanda"]
        ratios = [r.outcome(label).kind for label in labels]  # outcomes reach the hook
        assert ratios == ["weight-sparsity"] * 2 and r.outcome("dense") is None
        return [Figure(key="ppl", title="t", x_label="arm", y_label="ppl",
                       series=[Series(label="ppl", x=[0, 1], y=[r.ppl(label) for label in labels])])]  # fmt: skip

    monkeypatch.setitem(
        registry.PAPERS, "wanda", dataclasses.replace(registry.PAPERS["wanda"], figures=figures)
    )
    out = tmp_path / "r.json"
    main(["reproduce", "wanda", *SMALL, "--json", str(out)])
    record = Reproduction.model_validate_json(out.read_text())
    assert record.figures[0].series[0].y == [
        record.run("magnitude").metrics.ppl,
        record.run("wanda").metrics.ppl,
    ]
    capsys.readouterr()
