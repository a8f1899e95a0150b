"""The method contract, for every registered method on `random-llama`, and the runner's guarantees.

A new method that breaks the contract (wrong outcome kind, a silent no-op, layers removed without
renumbering) fails here, without any paper-specific test.
"""

from __future__ import annotations

import copy

import pytest
import torch
from savedmodels import save_checked
from torch import nn

from kb.errors import KBError
from kb.results import Outcome
from reference_impls import registry
from reference_impls.harness import reload_check, runner
from reference_impls.harness.contract import Context, ContractError, check_outcome, model_facts
from reference_impls.harness.data import pydoc_corpus, token_data
from reference_impls.harness.models import byte_tokenizer, random_llama
from reference_impls.registry import Run


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


# Training stand-ins train their own models; here they get a budget of a few tiny steps instead of their defaults.
QUICK: dict[str, dict] = {
    "sparse-scaling-laws": {"sparsities": (0.0, 0.5), "shapes": ((16, 32), (24, 40)), "steps": (3, 6),
                            "batch_size": 2, "seqlen": 16, "fit_starts": 2},
    "bitnet-b158": {"hidden": 16, "steps": 4, "batch_size": 2, "seqlen": 16},
}  # fmt: skip


def _savable(name: str) -> bool:
    """Whether `kb prune NAME --save` may save (KV-cache policies and training stand-ins change no weight)."""
    try:
        registry.savable_method(name)
    except KBError:
        return False
    return True


@pytest.mark.parametrize("name", sorted(registry.METHODS))
def test_every_method_keeps_the_contract_and_is_deterministic(name, calib_ids, tmp_path):
    """Every method passes the contract, twice with the same result, and what a savable method leaves saves
    into a directory that reloads to the same logits."""
    spec = registry.METHODS[name]
    dense = random_llama(seed=0, layers=4)
    results = []
    for _ in range(2):
        model = copy.deepcopy(dense)
        config = runner.method_config(spec, {}, QUICK.get(name, {}))
        applied = runner.apply_method(model, spec, config, calib_ids, Context())  # checks invariants
        outcome = applied.outcome
        assert outcome.kind == spec.kind and (applied.cache_policy is not None) == (spec.kind == "kv-cache")
        with torch.inference_mode():
            logits = model(calib_ids[:2]).logits
        assert torch.isfinite(logits).all()
        results.append((outcome, _weights(model)))
    (first, w1), (second, w2) = results
    assert first == second and w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)
    if _savable(name):
        check = save_checked(model, tmp_path / "saved")
        assert check["max_abs_logit_diff"] <= check["relative_tolerance"] * check["logit_scale"]
        assert check["generated_tokens"] == reload_check.GENERATE_TOKENS and (tmp_path / "saved").is_dir()
    else:
        assert spec.kind in ("kv-cache", "training")


def _facts_after(model: nn.Module, edit) -> tuple:
    before = model_facts(model)
    edit(model)
    return before, model_facts(model)


def test_a_silent_no_op_breaks_the_contract(random_model):
    before, after = _facts_after(random_model, lambda m: None)
    with pytest.raises(ContractError, match=r"no weight was zeroed|decoder sparsity"):
        check_outcome(
            "fake", "weight-sparsity", before, after, Outcome(kind="weight-sparsity"), {"sparsity": 0.5}
        )


def test_wrong_kind_and_wrong_return_type_break_the_contract(random_model):
    facts = model_facts(random_model)
    with pytest.raises(ContractError, match="kind"):
        check_outcome("fake", "depth", facts, facts, Outcome(kind="weight-sparsity"), {})
    with pytest.raises(ContractError, match="not an Outcome"):
        check_outcome("fake", "depth", facts, facts, None, {})  # type: ignore[arg-type]


def test_removing_layers_without_renumbering_breaks_the_contract():
    model = random_llama(seed=0, layers=4)

    def careless(m: nn.Module) -> None:
        del m.model.layers[1]
        m.config.num_hidden_layers = 3

    before, after = _facts_after(model, careless)
    with pytest.raises(ContractError, match="layer_idx"):
        check_outcome(
            "fake", "depth", before, after, Outcome(kind="depth", removed_layers=[1]), {"layers": 1}
        )


def test_allocation_ratios_must_average_the_target(random_model, calib_ids):
    from reference_impls import wanda

    before = model_facts(random_model)
    wanda.prune_layers(random_model, calib_ids, wanda.Config(sparsity=0.5), [0.5, 0.5], Context())
    after = model_facts(random_model)
    with pytest.raises(ContractError, match="average"):
        check_outcome("fake", "allocation", before, after, Outcome(kind="allocation", layer_sparsity=[0.4, 0.5]),
                      {"sparsity": 0.5})  # fmt: skip


def test_methods_without_sparsity_or_pattern_fields_get_only_their_targets():
    shortgpt = registry.METHODS["shortgpt"]
    config = runner.method_config(shortgpt, {"sparsity": 0.5, "pattern": (2, 4), "layers": 1})
    assert config.model_dump() == {"layers": 1, "selection": "lowest", "seed": 0}


def _data():
    return token_data(byte_tokenizer(), pydoc_corpus(), nsamples=4, seqlen=64, eval_tokens=256, seed=0)


def _plans(*runs: Run, target: dict) -> list[runner.Plan]:
    return [runner.Plan(r, registry.METHODS[r.method],
                        runner.method_config(registry.METHODS[r.method], target, dict(r.options))) for r in runs]  # fmt: skip


def test_every_run_starts_from_the_dense_model():
    """A structure-changing run followed by a weight run gives the same numbers as each run alone."""
    dense = random_llama(seed=0, layers=4)
    before = _weights(dense)
    data, options = _data(), runner.RunOptions(model="random-llama")
    target = {"sparsity": 0.5, "layers": 2}
    drop, prune = Run("drop", "shortgpt"), Run("prune", "wanda")
    quiet = lambda _msg: None  # noqa: E731
    both = runner.compare(
        dense, byte_tokenizer(), data, _plans(drop, prune, target=target), options, log=quiet
    )
    alone_prune = runner.compare(
        dense, byte_tokenizer(), data, _plans(prune, target=target), options, log=quiet
    )
    alone_drop = runner.compare(
        dense, byte_tokenizer(), data, _plans(drop, target=target), options, log=quiet
    )
    by_label = {r.label: r for r in both}
    assert by_label["prune"].metrics.ppl == alone_prune[1].metrics.ppl
    assert by_label["prune"].metrics.size == alone_prune[1].metrics.size
    assert by_label["prune"].metrics.size.layers == 4  # not run on the shrunken model
    assert (
        by_label["drop"].metrics.ppl == alone_drop[1].metrics.ppl
        and by_label["drop"].metrics.size.layers == 2
    )
    assert all(torch.equal(before[k], v) for k, v in dense.state_dict().items())  # dense never modified


def test_a_kv_cache_method_must_report_its_policy_and_keep_every_weight(random_model):
    facts = model_facts(random_model)
    with pytest.raises(ContractError, match="cache policy"):
        check_outcome("fake", "kv-cache", facts, facts, Outcome(kind="kv-cache"), {})
    policy = Outcome(kind="kv-cache", cache_policy={"name": "fake"})
    check_outcome("fake", "kv-cache", facts, facts, policy, {"kv_budget": 0.2})
    with torch.no_grad():
        random_model.model.layers[0].mlp.up_proj.weight[0].zero_()
    with pytest.raises(ContractError, match="changed decoder weights"):
        check_outcome("fake", "kv-cache", facts, model_facts(random_model), policy, {"kv_budget": 0.2})


def test_width_outcomes_must_report_true_shapes():
    from reference_impls.primitives import groups

    model = random_llama(seed=0, layers=2)
    before = model_facts(model)
    shapes = groups.compact(model, {groups.mlp_family(model, 1): [0, 1]})
    after = model_facts(model)
    check_outcome("fake", "width", before, after, Outcome(kind="width", shapes=shapes), {})
    with pytest.raises(ContractError, match="report the new shapes"):
        check_outcome("fake", "width", before, after, Outcome(kind="width"), {})
    wrong = {**shapes, "model.layers.1.mlp.up_proj.weight": [128, 64]}
    with pytest.raises(ContractError, match="reported shape"):
        check_outcome("fake", "width", before, after, Outcome(kind="width", shapes=wrong), {})


def test_stand_in_and_training_outcomes_must_carry_evidence(random_model):
    facts = model_facts(random_model)
    for kind in ("stand-in", "training"):
        with pytest.raises(ContractError, match="evidence"):
            check_outcome("fake", kind, facts, facts, Outcome(kind=kind), {})
        check_outcome("fake", kind, facts, facts, Outcome(kind=kind, details={"x": 1}), {})


def test_a_training_stand_in_must_leave_the_given_model_alone(random_model):
    before = model_facts(random_model)
    with torch.no_grad():
        random_model.model.layers[0].mlp.up_proj.weight[0].zero_()
    with pytest.raises(ContractError, match="unchanged"):
        check_outcome("fake", "training", before, model_facts(random_model), Outcome(kind="training", details={"x": 1}),
                      {})  # fmt: skip


def test_a_stand_in_with_a_sparsity_target_is_held_to_it(random_model):
    facts = model_facts(random_model)
    with pytest.raises(ContractError, match="decoder sparsity"):
        check_outcome(
            "fake", "stand-in", facts, facts, Outcome(kind="stand-in", details={"x": 1}), {"sparsity": 0.8}
        )


def test_papers_without_perplexity_measure_none():
    """`metrics=()`: neither the dense model nor any run is evaluated for perplexity."""
    dense = random_llama(seed=0, layers=2)
    data, options = _data(), runner.RunOptions(model="random-llama")
    runs = runner.compare(dense, byte_tokenizer(), data, _plans(Run("w", "wanda"), target={"sparsity": 0.5}),
                          options, ppl=False, log=lambda _m: None)  # fmt: skip
    assert [r.metrics.ppl for r in runs] == [None, None] and runs[1].metrics.size.decoder_sparsity > 0.49


def test_a_run_can_skip_the_probe_and_shares_nothing_with_a_probed_twin():
    """`Run(probe=False)`: that arm has no probe score while the others do; the same method and config with the
    probe is a different run (its result is not reused for the unprobed one, nor the other way round)."""
    dense = random_llama(seed=0, layers=2)
    data, options = _data(), runner.RunOptions(model="random-llama", probe_items=8)
    target = {"layers": 1}
    plans = _plans(Run("probed", "shortgpt"), Run("plain", "shortgpt", probe=False), target=target)
    runs = runner.compare(dense, byte_tokenizer(), data, plans, options, probe=True, log=lambda _m: None)
    by_label = {r.label: r for r in runs}
    assert by_label["dense"].metrics.probe.items == 8 and by_label["probed"].metrics.probe.items == 8
    assert by_label["plain"].metrics.probe is None
    assert by_label["plain"].metrics.ppl == by_label["probed"].metrics.ppl


def _biased_o_proj(model: nn.Module, layer: int = 1) -> None:
    """A width-like edit that leaves a bias on one `o_proj` (LLaMA's config says attention_bias=False)."""
    old = model.model.layers[layer].self_attn.o_proj
    new = nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        new.weight.copy_(old.weight)
        new.bias.fill_(0.5)
    model.model.layers[layer].self_attn.o_proj = new


def _attention_biases(model: nn.Module, wrong: int) -> None:
    """attention_bias=True with a bias on every attention projection, layer 0's q_proj bias `wrong` long."""
    model.config.attention_bias = True
    for i, layer in enumerate(model.model.layers):
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            proj = getattr(layer.self_attn, name)
            size = wrong if (i, name) == (0, "q_proj") else proj.out_features
            proj.bias = nn.Parameter(torch.zeros(size))


def _width_run(model: nn.Module, edit) -> tuple:
    """A real width step (two MLP channels of layer 1 removed) followed by `edit`: (before, after, outcome)."""
    from reference_impls.primitives import groups

    before = model_facts(model)
    shapes = groups.compact(model, {groups.mlp_family(model, 1): [0, 1]})
    edit(model)
    return before, model_facts(model), Outcome(kind="width", shapes=shapes)


def test_a_bias_the_config_does_not_announce_breaks_the_contract(random_model):
    before, after, outcome = _width_run(random_model, _biased_o_proj)
    with pytest.raises(
        ContractError, match=r"layer 1: self_attn.o_proj has a bias, the config says attention_bias"
    ):
        check_outcome("fake", "width", before, after, outcome, {})


def test_adding_or_dropping_a_bias_breaks_the_contract_without_llama_flags(random_model):
    random_model.config.model_type = "not-llama"  # no attention_bias / mlp_bias flags to hold it to
    before, after, outcome = _width_run(random_model, _biased_o_proj)
    with pytest.raises(ContractError, match=r"added a bias to self_attn\.o_proj"):
        check_outcome("fake", "width", before, after, outcome, {})
    biased = random_llama(seed=0, layers=2)
    biased.config.model_type = "not-llama"
    for layer in (0, 1):
        _biased_o_proj(biased, layer)
    before, after, outcome = _width_run(
        biased, lambda m: setattr(m.model.layers[1].self_attn.o_proj, "bias", None)
    )
    with pytest.raises(ContractError, match=r"removed the bias of self_attn\.o_proj"):
        check_outcome("fake", "width", before, after, outcome, {})


def test_a_problem_the_model_came_in_with_is_not_the_methods(random_model):
    _biased_o_proj(random_model)
    before, after, outcome = _width_run(random_model, lambda m: None)
    check_outcome("fake", "width", before, after, outcome, {})


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (
            lambda m: setattr(m.config, "hidden_size", 48),
            r"the config says vocab_size x hidden_size = \[256, 48\]",
        ),
        (lambda m: setattr(m.model, "embed_tokens", nn.Embedding(200, 64)), r"the embedding is \[200, 64\]"),
        (lambda m: setattr(m, "lm_head", nn.Linear(64, 256, bias=False)), "the LM head is not tied"),
        (
            lambda m: setattr(m.config, "layer_intermediate_sizes", [128, 96]),
            "intermediate size for this layer is 96",
        ),
        (
            lambda m: _attention_biases(m, wrong=3),
            r"layer 0: self_attn.q_proj.bias is \[3\], its weight has 64 output rows",
        ),
        (
            lambda m: setattr(m.model.layers[0], "input_layernorm", nn.RMSNorm(60)),
            r"layer 0: input_layernorm.weight is \[60\], hidden_size is 64",
        ),
    ],
)
def test_tensors_the_config_does_not_describe_break_the_contract(random_model, edit, needle):
    before, after, outcome = _width_run(random_model, edit)
    with pytest.raises(ContractError, match=needle):
        check_outcome("fake", "width", before, after, outcome, {})


def test_per_layer_intermediate_sizes_must_match_the_mlps(random_model):
    before, after, outcome = _width_run(random_model, lambda m: None)
    assert after.config["intermediate"] == [128, 126]  # read from the per-layer list
    check_outcome("fake", "width", before, after, outcome, {})
    random_model.config.layer_intermediate_sizes = [128, 128]
    with pytest.raises(
        ContractError, match=r"layer 1: mlp.\w+_proj.weight is \[.*\], the config's intermediate"
    ):
        check_outcome("fake", "width", before, model_facts(random_model), outcome, {})
