"""A Deeper Look: Shapley efficiency, mean-update emulation (value, effect, saving), sublayer drops."""

from __future__ import annotations

import pytest
import torch
from savedmodels import fresh_process, greedy, save_checked

from reference_impls import deeper_look_depth as dl
from reference_impls.harness.contract import Context
from reference_impls.harness.models import random_llama
from reference_impls.primitives.blocks import bypassed, mean_loss, sublayer_stats


def test_shapley_block_values_are_efficient_on_two_layers(calib_ids):
    model = random_llama(seed=0, layers=2)
    ids = calib_ids[:2, :32]
    phi = dl.shapley_scores(model, ids, "block", permutations=3)
    full = -mean_loss(model, ids)
    with bypassed(model, [("block", 0), ("block", 1)]):
        none = -mean_loss(model, ids)
    assert sum(phi) == pytest.approx(full - none, rel=1e-5)
    out = dl.prune(model, calib_ids, dl.Config(layers=1, target="attention", metric="shapley", examples=2,
                                               example_len=32), Context())  # fmt: skip
    assert len(out.removed_sublayers) == 1 and len(out.details["scores"]) == 2


def test_the_mean_update_is_the_mean_branch_output_and_keeps_the_mean_residual(calib_ids):
    model = random_llama(seed=0, layers=3)
    stats = sublayer_stats(model, calib_ids)
    out = dl.prune(model, calib_ids, dl.Config(layers=1, target="mlp", emulate="mean"), Context())
    (name,) = out.removed_sublayers
    i = int(name.split(".")[0])
    torch.testing.assert_close(model.model.layers[i].mlp.bias.detach(), stats.mlp_mean[i])
    assert model.config.emulated_mlp == [i] and model.config.skipped_mlp == [i]
    # the layer's mean output over the calibration tokens is unchanged (its inputs are the dense ones)
    dense = random_llama(seed=0, layers=3)
    outs = []
    for m in (dense, model):
        got = []
        h = m.model.layers[i].register_forward_hook(
            lambda _m, _a, _k, o, got=got: got.append(o), with_kwargs=True
        )
        with torch.inference_mode():
            m(calib_ids, use_cache=False)
        h.remove()
        outs.append(got[0].reshape(-1, 64).mean(0))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-5)


def test_attention_and_plain_drops(calib_ids):
    model = random_llama(seed=0, layers=4)
    out = dl.prune(model, calib_ids, dl.Config(layers=2, target="attention"), Context())
    scores = out.details["scores"]
    chosen = [int(s.split(".")[0]) for s in out.removed_sublayers]
    assert chosen == sorted(sorted(range(4), key=lambda j: (scores[j], j))[:2])
    assert model.config.skipped_attention == chosen and not model.config.emulated_attention
    model = random_llama(seed=0, layers=4)
    out = dl.prune(model, calib_ids, dl.Config(layers=1, target="block"), Context())
    assert len(out.removed_layers) == 1 and model.config.num_hidden_layers == 3


def test_an_emulated_model_saves_and_generates_in_a_fresh_process(calib_ids, tmp_path):
    model = random_llama(seed=0, layers=3)
    dl.prune(model, calib_ids, dl.Config(layers=1, target="attention", emulate="mean"), Context())
    expected = greedy(model)
    save_checked(model, tmp_path / "m")
    got = fresh_process(tmp_path / "m", tmp_path)
    assert got["tokens"] == expected[0].tolist() and got["params"] == sum(
        p.numel() for p in model.parameters()
    )


def test_a_save_from_before_mean_updates_still_loads(calib_ids, tmp_path):
    """Older saves have no `emulated_*` lists: their skipped sublayers stay parameter-free and add zero."""
    import json

    from reference_impls.harness import pruned_llama

    model = random_llama(seed=0, layers=3)
    dl.prune(model, calib_ids, dl.Config(layers=1, target="mlp"), Context())
    save_checked(model, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    for key in ("emulated_attention", "emulated_mlp"):
        config.pop(key)
    old = pruned_llama.KBPrunedLlamaForCausalLM(pruned_llama.KBPrunedLlamaConfig(**config)).eval()
    missing = old.load_state_dict(model.state_dict(), strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys
    with torch.inference_mode():
        torch.testing.assert_close(old(calib_ids[:2]).logits, model(calib_ids[:2]).logits)
