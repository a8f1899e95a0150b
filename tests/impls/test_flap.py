"""FLAP on `random-llama`: the fluctuation scores, one global threshold, bias compensation, the saved model, and the
output-bias flags the harness gained for it (`pruned_llama.OUTPUT_BIASES`)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from savedmodels import SMALL, fresh_process, greedy, save_checked

from kb.errors import KBError
from reference_impls import flap
from reference_impls.harness import pruned_llama
from reference_impls.harness.contract import Context, ContractError, check_outcome, model_facts
from reference_impls.harness.models import random_llama
from reference_impls.primitives import groups as G
from reference_impls.primitives.sizing import decoder_params


def _inputs(model, calib) -> dict[str, torch.Tensor]:
    """Every o_proj / down_proj input over the calibration tokens, (tokens, in), from one forward."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [mod.register_forward_pre_hook(lambda _m, a, n=name: seen.update({n: a[0].reshape(-1, a[0].shape[-1])}))
             for name, mod in model.model.named_modules() if name.endswith(("o_proj", "down_proj"))]  # fmt: skip
    with torch.no_grad():
        model(calib, use_cache=False)
    for h in hooks:
        h.remove()
    return seen


def _kept_columns(pruned: torch.Tensor, dense: torch.Tensor) -> list[int]:
    """Which columns of `dense` the compacted `pruned` kept (columns are distinct in a random model)."""
    return [int((dense == pruned[:, [j]]).all(0).nonzero()[0]) for j in range(pruned.shape[1])]


def test_scores_are_standardised_wifv_with_squared_attention_and_group_means(calib_ids):
    model = random_llama(seed=0, layers=3)
    x = _inputs(model, calib_ids)
    units = flap.unit_scores(model, flap.input_moments(model, calib_ids, Context()), "WIFV")
    assert [(u.family.kind, u.family.layer) for u in units] == [("kv-head", i) for i in range(3)] + [
        ("mlp", i) for i in range(3)
    ]
    for u in units:
        wifv = x[u.name].double().var(0) * u.proj.weight.double().square().sum(0)
        if u.family.kind == "kv-head":
            wifv = wifv.square()
        z = (wifv - wifv.mean()) / wifv.std()
        torch.testing.assert_close(u.score, z.reshape(u.family.units, -1).mean(1), rtol=1e-3, atol=1e-4)


def test_keep_best_keeps_the_best_prefix_closest_to_the_budget():
    scores = torch.tensor([0.5, -1.0, 2.0, 0.5, 0.0])
    weights = torch.tensor([1.0, 1.0, 10.0, 3.0, 1.0], dtype=torch.float64)
    # by score: 2.0 (10), 0.5 (1, index 0 before index 3), 0.5 (3), 0.0 (1), -1.0 (1)
    assert flap.keep_best(scores, weights, 11.4).tolist() == [True, False, True, False, False]
    assert flap.keep_best(scores, weights, 14.6).tolist() == [True, False, True, True, True]
    assert not flap.keep_best(scores, weights, 4.9).any()  # 0 is closer than 10
    assert flap.keep_best(scores, weights, 99.0).all()


@pytest.mark.parametrize("params", [0.2, 0.45])
def test_one_global_threshold_removes_the_target_share_in_whole_kv_groups(calib_ids, params):
    model = random_llama(seed=0, layers=4)
    units = flap.unit_scores(model, flap.input_moments(model, calib_ids, Context()), "WIFV")
    dense = decoder_params(model)
    per_group = G.kv_head_family(model, 0).params_per_unit(model) / dense
    out = flap.prune(model, calib_ids, flap.Config(params=params), Context())
    removed_scores, kept_scores = [], []
    for u in units:
        family = G.kv_head_family(model, u.family.layer) if u.family.kind == "kv-head" else None
        if family is None:
            kept = out.details["mlp_widths"][u.family.layer]
            order = torch.sort(u.score, descending=True).values
            kept_scores.append(order[:kept])
            removed_scores.append(order[kept:])
        else:
            gone = out.details["removed_kv_heads"].get(str(u.family.layer), [])
            mask = torch.ones(u.family.units, dtype=torch.bool)
            mask[gone] = False
            kept_scores.append(u.score[mask])
            removed_scores.append(u.score[~mask])
            heads, kv = G.attention_widths(model, u.family.layer)
            assert heads == 2 * kv  # query heads per KV head unchanged: whole groups went
    assert float(torch.cat(removed_scores).max()) <= float(torch.cat(kept_scores).min())  # one threshold
    assert len(set(out.details["mlp_widths"])) > 1  # the widths adapt per layer
    share = 1 - decoder_params(model) / dense
    assert share == pytest.approx(out.details["decoder_params_removed_fraction"], abs=1e-6)
    assert abs(share - params) <= per_group  # within one KV group of the target


def test_bias_compensation_keeps_the_mean_output_on_the_calibration_inputs(calib_ids):
    dense = random_llama(seed=0, layers=2)
    x = _inputs(dense, calib_ids)
    with_bias, without = copy.deepcopy(dense), copy.deepcopy(dense)
    flap.prune(with_bias, calib_ids, flap.Config(ratio=0.5), Context())
    flap.prune(without, calib_ids, flap.Config(ratio=0.5, bias=False), Context())
    for name in ("layers.1.mlp.down_proj", "layers.0.self_attn.o_proj"):
        d, b, n = (dict(m.model.named_modules())[name] for m in (dense, with_bias, without))
        assert torch.equal(b.weight, n.weight) and n.bias is None  # same removal; only the bias differs
        keep = _kept_columns(b.weight, d.weight)
        assert len(keep) < d.weight.shape[1]
        with torch.no_grad():
            target = d(x[name]).double().mean(0)
            compensated, plain = (m(x[name][:, keep]).double().mean(0) for m in (b, n))
        lost = (plain - target).abs().max()  # the mean the removed channels carried
        assert lost > 0 and (compensated - target).abs().max() <= 1e-3 * lost
    assert with_bias.config.o_proj_bias and with_bias.config.down_proj_bias
    assert not getattr(without.config, "o_proj_bias", False)


def test_kb_prune_saves_a_model_that_reloads_and_generates_in_a_fresh_process(tmp_path, capsys):
    from kb_cli.main import main
    from reference_impls.harness.models import load_model

    save = tmp_path / "pruned"
    assert main(["prune", "flap", *SMALL, "--params", "0.3", "--save", str(save)]) == 0
    capsys.readouterr()
    config = json.loads((save / "config.json").read_text(encoding="utf-8"))
    assert (
        config["model_type"] == pruned_llama.MODEL_TYPE and config["o_proj_bias"] and config["down_proj_bias"]
    )
    loaded = load_model(str(save), "cpu").model
    assert (
        loaded.model.layers[0].mlp.down_proj.bias is not None
        and loaded.model.layers[0].mlp.up_proj.bias is None
    )
    assert fresh_process(save, tmp_path, remote=True)["tokens"] == greedy(loaded)[0].tolist()


# ---- the harness's output-bias flags (shared files; the flags default to today's behaviour) --------------
def test_output_bias_flags_build_biases_on_o_proj_and_down_proj_only():
    config = pruned_llama.KBPrunedLlamaConfig(**random_llama(seed=0).config.to_dict())
    plain = pruned_llama.KBPrunedLlamaForCausalLM(config)
    assert not any(
        n.endswith("bias") for n, _ in plain.named_parameters()
    )  # absent flags: no bias, as before
    config = pruned_llama.KBPrunedLlamaConfig(**{**config.to_dict(), "down_proj_bias": True})
    biased = {
        n for n, _ in pruned_llama.KBPrunedLlamaForCausalLM(config).named_parameters() if n.endswith("bias")
    }
    assert biased == {f"model.layers.{i}.mlp.down_proj.bias" for i in range(2)}


def test_the_contract_accepts_an_output_bias_only_when_the_config_announces_it(random_model):
    before = model_facts(random_model)
    shapes = G.compact(random_model, {G.mlp_family(random_model, 1): [0, 1]})
    pruned_llama.add_output_biases(random_model, o_proj=True, down_proj=False)
    from kb.results import Outcome

    outcome = Outcome(kind="width", shapes=shapes)
    with pytest.raises(
        ContractError, match=r"self_attn.o_proj has a bias, the config says attention_bias=False"
    ):
        check_outcome("fake", "width", before, model_facts(random_model), outcome, {})
    random_model.config.o_proj_bias = True
    check_outcome("fake", "width", before, model_facts(random_model), outcome, {})
    random_model.config.down_proj_bias = True  # announced, but down_proj has none
    with pytest.raises(
        ContractError, match=r"mlp.down_proj lacks a bias, the config says down_proj_bias=True"
    ):
        check_outcome("fake", "width", before, model_facts(random_model), outcome, {})


def test_output_biases_alone_are_saved_with_the_modeling_file(random_model, tmp_path):
    import transformers as tf

    pruned_llama.add_output_biases(random_model, o_proj=True, down_proj=True)
    random_model.config.o_proj_bias = random_model.config.down_proj_bias = True
    with torch.no_grad():
        random_model.model.layers[1].mlp.down_proj.bias.normal_()
    check = save_checked(random_model, tmp_path / "saved")  # uniform widths: only the biases need it
    assert check["max_abs_logit_diff"] <= check["relative_tolerance"] * check["logit_scale"]
    assert (
        json.loads((tmp_path / "saved" / "config.json").read_text())["model_type"] == pruned_llama.MODEL_TYPE
    )
    shape = {k: getattr(random_model.config, k) for k in ("vocab_size", "hidden_size", "intermediate_size",
                                                          "num_attention_heads", "num_key_value_heads")}  # fmt: skip
    mistral = tf.MistralForCausalLM(tf.MistralConfig(sliding_window=None, num_hidden_layers=1, **shape))
    pruned_llama.add_output_biases(mistral, o_proj=True, down_proj=False)
    mistral.config.o_proj_bias = True
    with pytest.raises(KBError, match="output biases are saved for LLaMA models only"):
        save_checked(mistral, tmp_path / "other")
