"""Coupled components on `random-llama`: the data-dependency scores, the layers it prunes, the saved model."""

from __future__ import annotations

import copy

import torch
from savedmodels import fresh_process, greedy

from reference_impls import coupled_components as cc
from reference_impls.harness.contract import Context
from reference_impls.harness.models import random_llama
from reference_impls.primitives import groups as G
from reference_impls.primitives.importance import group_importance


def test_contribution_scores_are_input_norm_times_column_norm_summed_per_group(calib_ids):
    model = random_llama(seed=0, layers=2)
    inputs: dict[str, torch.Tensor] = {}
    layer = model.model.layers[1]
    hooks = [layer.self_attn.o_proj.register_forward_pre_hook(lambda _m, a: inputs.update(attn=a[0])),
             layer.mlp.down_proj.register_forward_pre_hook(lambda _m, a: inputs.update(mlp=a[0]))]  # fmt: skip
    with torch.inference_mode():
        model(calib_ids)
    for h in hooks:
        h.remove()
    kv, mlp = G.kv_head_family(model, 1), G.mlp_family(model, 1)
    scores = group_importance(model, [kv, mlp], "contribution", tokens=calib_ids, chunk=3)
    x_mlp = inputs["mlp"].reshape(-1, 128).norm(dim=0)
    expected_mlp = x_mlp * layer.mlp.down_proj.weight.norm(dim=0)
    torch.testing.assert_close(scores[mlp], expected_mlp, rtol=1e-4, atol=1e-5)
    per_channel = inputs["attn"].reshape(-1, 64).norm(dim=0) * layer.self_attn.o_proj.weight.norm(dim=0)
    torch.testing.assert_close(scores[kv], per_channel.reshape(2, 32).sum(1), rtol=1e-4, atol=1e-5)


def test_prune_removes_a_quarter_between_the_first_and_last_layer(calib_ids):
    dense = random_llama(seed=0, layers=4)
    model = copy.deepcopy(dense)
    out = cc.prune(model, calib_ids, cc.Config(), Context())
    assert out.details["pruned_layers"] == [1, 2]
    for i in range(4):
        widths = (*G.attention_widths(model, i), G.mlp_width(model, i))
        assert widths == ((2, 1, 96) if i in (1, 2) else (4, 2, 128))
    for i in (0, 3):
        for a, b in zip(model.model.layers[i].parameters(), dense.model.layers[i].parameters(), strict=True):
            assert torch.equal(a, b)
    per_layer = 32 * 3 * 64 + (2 * 2 + 2) * 16 * 64
    assert out.details["params_before"] - out.details["params_after"] == 2 * per_layer


def test_magnitude_and_data_scores_remove_the_same_amount_but_different_groups(calib_ids):
    data, mag = random_llama(seed=0, layers=4), random_llama(seed=0, layers=4)
    a = cc.prune(data, calib_ids, cc.Config(), Context())
    b = cc.prune(mag, calib_ids, cc.Config(importance="l2"), Context())
    assert a.details["params_after"] == b.details["params_after"]
    assert any(not torch.equal(p, q) for p, q in zip(data.parameters(), mag.parameters(), strict=True))


def test_kb_prune_saves_a_model_that_loads_and_generates_in_a_fresh_process(tmp_path, capsys):
    from kb_cli.main import main
    from reference_impls.harness.models import load_model

    save = tmp_path / "pruned"
    args = ["--model", "random-llama", "--nsamples", "8", "--seqlen", "64", "--eval-tokens", "256"]
    sets = ["--set", "keep_first=0", "--set", "recovery_steps=2"]
    assert main(["prune", "coupled-components", *args, *sets, "--save", str(save)]) == 0
    capsys.readouterr()
    loaded = load_model(str(save), "cpu").model
    result = fresh_process(save, tmp_path, remote=True)
    assert result["tokens"] == greedy(loaded)[0].tolist()
    assert G.mlp_width(loaded, 0) == 96 and G.mlp_width(loaded, 1) == 128
