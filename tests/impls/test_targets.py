"""One way in per target: the comparison's target (`--sparsity`, `--pattern`, `--layers`, `--kv-budget`, `--params`)
is checked against one table of bounds and reaches every arm that takes it; `--set` refuses target names; width
methods take `--params` and can be swept. All on `random-llama` with tiny budgets."""

from __future__ import annotations

import pytest

from kb.errors import KBError
from kb.results import Reproduction, Sweep
from kb_cli.main import main
from reference_impls import registry
from reference_impls.harness.runner import paper_options, plan_runs

SMALL = ["--model", "random-llama", "--nsamples", "4", "--seqlen", "64", "--eval-tokens", "128"]
WIDTH = sorted(m for m, s in registry.METHODS.items() if s.kind == "width")


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], *, progress: bool = False) -> str:
    """Exit 2 with one error line on stderr: the only line, or with `progress` the last after progress lines."""
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    errors = [line for line in err if line.startswith("kb: error: ")]
    assert len(errors) == 1 and err[-1] == errors[0] and "Traceback" not in "".join(err), err
    assert progress or len(err) == 1, err
    return errors[0]


# ---- --set is not a way in for a target --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["reproduce", "wanda", "--set", "sparsity=0.9"], "use --sparsity 0.9, not --set sparsity=0.9"),
        (["reproduce", "h2o", "--set", "kv_budget=1.5"], "use --kv-budget 1.5, not --set kv_budget=1.5"),
        (["reproduce", "wanda", "--set", "pattern=2:4"], "use --pattern 2:4, not --set pattern=2:4"),
        (["reproduce", "shortgpt", "--set", "layers=3"], "use --layers 3, not --set layers=3"),
        (["reproduce", "minitron", "--set", "params=0.2"], "use --params 0.2, not --set params=0.2"),
        (["prune", "wanda", "--set", "sparsity=0.7", "--save", "unused"], "use --sparsity 0.7"),
    ],
)
def test_set_refuses_target_names_and_names_the_flag(capsys, argv, needle):
    assert needle in _one_line_error(capsys, argv)


def test_run_options_refuse_a_target_in_overrides():
    from reference_impls.harness.runner import RunOptions

    with pytest.raises(KBError, match=r"use --sparsity 0\.9"):
        RunOptions(overrides={"sparsity": 0.9})  # the Python way in says the same as the command line


# ---- bounds: one table, every way in ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (
            ["reproduce", "h2o", "--kv-budget", "1.5"],
            "--kv-budget must be a fraction of the prompt in (0, 1], got 1.5",
        ),
        (
            ["reproduce", "keyformer", "--kv-budget", "0"],
            "--kv-budget must be a fraction of the prompt in (0, 1]",
        ),
        (
            ["reproduce", "wanda", "--sparsity", "1"],
            "--sparsity must be a fraction of weights to prune in [0, 1)",
        ),
        (["reproduce", "shortgpt", "--layers", "0"], "--layers must be a positive integer"),
        (
            ["reproduce", "minitron", "--params", "1"],
            "--params must be a fraction of the decoder's parameters",
        ),
        (["prune", "llm-pruner", "--params", "-0.1", "--save", "unused"], "--params must be a fraction"),
        (["sweep", "minitron", "--params", "0.2,1.5"], "--params must be a fraction"),
        (
            ["sweep", "h2o", "--kv-budget", "0.5,2"],
            "--kv-budget must be a fraction of the prompt in (0, 1], got 2.0",
        ),
        (["reproduce", "wanda", "--params", "0.2"], "--params does not apply to wanda (weight-sparsity)"),
        (["reproduce", "shortgpt", "--params", "0.2"], "--params does not apply to shortgpt (depth)"),
        (["sweep", "wanda", "--params", "0.2"], "--params does not apply to wanda"),
        (["reproduce", "dsnot", "--sparsity", "0.5"], "--sparsity would change no run of dsnot"),
        (["reproduce", "--all", "--params", "0.2"], "--params does not go with --all"),
    ],
)
def test_out_of_bounds_and_misplaced_targets_are_one_line(capsys, argv, needle):
    assert needle in _one_line_error(capsys, argv)


def test_the_bounds_table_at_its_edges():
    ok = [("sparsity", 0.0), ("sparsity", 0.99), ("kv_budget", 1.0), ("kv_budget", 1e-3), ("layers", 1),
          ("layers", 2.0), ("params", 0.5), ("pattern", "2:4"), ("pattern", (4, 8))]  # fmt: skip
    for name, value in ok:
        registry.check_target(name, value)
    bad = [("sparsity", 1.0), ("sparsity", -0.1), ("kv_budget", 0.0), ("kv_budget", 1.01), ("layers", 0),
           ("layers", True), ("layers", 2.5), ("params", 0.0), ("params", 1.0), ("params", float("nan")),
           ("pattern", "4:4"), ("pattern", (2, 4, 8)), ("sparsity", "half")]  # fmt: skip
    for name, value in bad:
        with pytest.raises(KBError):
            registry.check_target(name, value)
    assert set(registry.TARGET_BOUNDS) | {"pattern"} == set(registry.TARGETS)


def test_every_declared_target_value_is_within_the_bounds():
    for spec in registry.PAPERS.values():
        registry.check_targets(spec.defaults)
        for run in spec.runs:
            registry.check_targets(
                {k: v for k, v in run.options.items() if k in registry.METHODS[run.method].targets}
            )


# ---- the target reaches every arm that takes it -------------------------------------------------------------
_VALUE = {"sparsity": 0.6, "pattern": (2, 4), "layers": 1, "kv_budget": 0.3, "params": 0.2}


@pytest.mark.parametrize("paper", sorted(registry.PAPERS))
def test_a_target_flag_reaches_every_arm_that_takes_it(paper):
    spec = registry.PAPERS[paper]
    for target in registry.METHODS[spec.method].targets:
        value = _VALUE[target]
        if not any(
            target in registry.METHODS[r.method].targets and target not in r.fixed_targets()
            for r in spec.runs
        ):
            continue  # every arm fixes it: the flag is refused (tested above)
        plans = plan_runs(spec, paper_options(spec, {"target": {target: value}, "all_runs": True}))
        takers = [p for p in plans if target in p.spec.targets and target not in p.run.fixed_targets()]
        assert takers, paper
        for plan in takers:
            assert getattr(plan.config, target) == value, (paper, plan.run.label)
        for plan in plans:  # an arm that fixes the option keeps its own value
            for name, fixed in plan.run.options.items():
                if name == target == "sparsity":
                    assert getattr(plan.config, name) == fixed, (paper, plan.run.label)


def test_wanda_sparsity_prunes_every_arm_to_it(tmp_path, capsys):
    out = tmp_path / "wanda.json"
    rc = main(["reproduce", "wanda", *SMALL, "--sparsity", "0.6", "--json", str(out)])
    assert rc in (0, 1)
    record = Reproduction.model_validate_json(out.read_text())
    assert record.config["target"] == {"sparsity": 0.6}
    pruned = [r for r in record.runs if r.label != "dense"]
    assert [r.label for r in pruned] == ["magnitude", "wanda"]
    for run in pruned:
        assert run.config["sparsity"] == 0.6
        # within one weight per row (Wanda rounds each row's count down; the narrowest rows hold 64 weights)
        assert run.metrics.size.decoder_sparsity == pytest.approx(0.6, abs=1 / 64), run.label
    assert record.run("dense").metrics.size.decoder_sparsity < 0.01
    capsys.readouterr()


# ---- --params for width methods -----------------------------------------------------------------------------
def test_every_width_method_takes_params_and_defaults_to_its_own_size():
    import importlib

    assert WIDTH and all(registry.METHODS[m].targets == ("params",) for m in WIDTH)
    for m in WIDTH:
        config = importlib.import_module(registry.METHODS[m].module).Config()
        assert config.params is None  # unset: the method's own size options decide, as before


def _removed(run, dense) -> float:
    return 1 - run.metrics.size.params_decoder / dense.metrics.size.params_decoder


def test_sweep_width_methods_over_params(tmp_path, capsys):
    out = tmp_path / "sweep.json"
    rc = main(["sweep", "minitron", "llm-pruner", "--params", "0.3,0.1", *SMALL, "--json", str(out)])
    assert rc == 0, capsys.readouterr().err
    sweep = Sweep.model_validate_json(out.read_text())
    assert (
        sweep.axis == "params" and sweep.values == [0.1, 0.3] and sweep.name == "params-minitron-llm-pruner"
    )
    dense = sweep.runs[0]
    assert dense.label == "dense"
    assert [r.label for r in sweep.runs[1:]] == [
        "minitron@0.1",
        "llm-pruner@0.1",
        "minitron@0.3",
        "llm-pruner@0.3",
    ]
    for method, slack in (("minitron", 0.01), ("llm-pruner", 0.05)):  # llm-pruner cuts whole KV groups too
        points = sweep.points(method)
        assert [x for x, _ in points] == [0.1, 0.3]
        for x, run in points:
            assert run.config["params"] == x
            assert _removed(run, dense) == pytest.approx(x, abs=slack), (method, x)
    # llm-pruner records the ratio it derived: with two KV groups a layer, 30% needs one whole group (ratio >= 1/4)
    ratio = {
        r.label: r.outcome.details["ratio"] for r in sweep.runs if r.method == "llm-pruner" and r.outcome
    }
    assert ratio["llm-pruner@0.3"] >= 0.25 > ratio["llm-pruner@0.1"]
    capsys.readouterr()


def test_prune_a_width_method_by_params(tmp_path, capsys):
    from reference_impls.harness.metrics import model_size
    from reference_impls.harness.models import load_model

    save = tmp_path / "pruned"
    assert main(["prune", "minitron", *SMALL, "--params", "0.4", "--save", str(save)]) == 0
    before = model_size(load_model("random-llama").model).params_decoder
    after = model_size(load_model(str(save)).model).params_decoder
    assert 1 - after / before == pytest.approx(0.4, abs=0.01)
    capsys.readouterr()


def test_params_a_model_cannot_reach_is_one_line(tmp_path, capsys):
    # the Minitron approach sizes both students by whole layers: a 2-layer model offers 0% or 50%
    argv = ["prune", "minitron-approach", *SMALL, "--params", "0.2", "--save", str(tmp_path / "x")]
    line = _one_line_error(capsys, argv, progress=True)  # found once the model is loaded
    assert "--params 0.2 cannot be met on this model" in line
    assert not (tmp_path / "x").exists()


def test_the_outcome_is_held_to_the_params_target():
    import torch

    from reference_impls import minitron
    from reference_impls.harness.contract import Context, ContractError, check_outcome, model_facts
    from reference_impls.harness.models import random_llama

    model = random_llama(0)
    before = model_facts(model)
    calib = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))
    outcome = minitron.prune(model, calib, minitron.Config(mlp_keep=0.9), Context())  # removes ~7%, not 30%
    after = model_facts(model)
    check_outcome("minitron", "width", before, after, outcome, {})
    check_outcome("minitron", "width", before, after, outcome, {"params": 0.07})
    with pytest.raises(ContractError, match=r"removed 0\.0\d+ of the decoder's parameters, target 0.3"):
        check_outcome("minitron", "width", before, after, outcome, {"params": 0.3})


def test_the_fingerprint_takes_the_nearest_size_where_the_model_cannot_reach_the_target():
    """`contract.any_size` (the fingerprint's small model only): the same search, its nearest size accepted, both
    by the sizing search and by the outcome check; outside it the same target is refused."""
    from kb.errors import KBError
    from reference_impls.harness.contract import any_size, params_tolerance
    from reference_impls.harness.models import random_llama
    from reference_impls.primitives.sizing import decoder_params, share_for_params

    model = random_llama(0)
    total = decoder_params(model)

    def removed(share: float) -> int:  # whole halves of the decoder only: 0% or 50%
        return total // 2 if share >= 0.5 else 0

    with pytest.raises(KBError, match="cannot be met"):
        share_for_params(model, 0.2, removed, name="toy")
    with any_size():
        assert params_tolerance() == float("inf")
        assert removed(share_for_params(model, 0.2, removed, name="toy")) == 0  # 0% is nearer 20% than 50% is
        assert removed(share_for_params(model, 0.4, removed, name="toy")) == total // 2
    assert params_tolerance() == 0.05
