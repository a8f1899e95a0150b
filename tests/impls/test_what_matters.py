"""What Matters: similarity importance of attention / MLP / blocks, drops, KV cache, one-shot vs iterative."""

from __future__ import annotations

import torch
from savedmodels import PROMPT, greedy

from reference_impls import what_matters
from reference_impls.harness.contract import Context
from reference_impls.harness.models import random_llama
from reference_impls.harness.speed import measure_speed


def test_a_zeroed_attention_has_importance_zero_and_goes_first(calib_ids):
    model = random_llama(seed=0, layers=4)
    with torch.no_grad():
        model.model.layers[2].self_attn.o_proj.weight.zero_()
    out = what_matters.prune(model, calib_ids, what_matters.Config(layers=1, target="attention"), Context())
    assert out.removed_sublayers == ["2.attn"] and out.details["importance"]["2.attention"] == 0.0
    assert model.config.skipped_attention == [2] and len(model.model.layers) == 4
    greedy(model)


def test_attention_drop_shrinks_the_kv_cache_by_the_dropped_share(calib_ids):
    dense = random_llama(seed=0, layers=4)
    model = random_llama(seed=0, layers=4)
    what_matters.prune(model, calib_ids, what_matters.Config(layers=2, target="attention"), Context())
    kv_dense = measure_speed(dense, PROMPT, decode_tokens=3, repeats=1).kv_cache_bytes
    kv = measure_speed(model, PROMPT, decode_tokens=3, repeats=1).kv_cache_bytes
    per_layer = kv_dense // 4
    stub = 2 * (PROMPT.shape[1] + 3) * 4  # one float for keys and one for values per token and dropped layer
    assert kv == 2 * per_layer + 2 * stub


def test_mlp_block_and_joint_targets(calib_ids):
    model = random_llama(seed=0, layers=4)
    out = what_matters.prune(model, calib_ids, what_matters.Config(layers=2, target="mlp"), Context())
    assert len(out.removed_sublayers) == 2 and all(s.endswith(".mlp") for s in out.removed_sublayers)
    assert len(model.config.skipped_mlp) == 2
    model = random_llama(seed=0, layers=4)
    out = what_matters.prune(model, calib_ids, what_matters.Config(layers=2, target="block"), Context())
    assert len(out.removed_layers) == 2 and model.config.num_hidden_layers == 2
    model = random_llama(seed=0, layers=4)
    out = what_matters.prune(model, calib_ids, what_matters.Config(layers=3, target="joint"), Context())
    assert len(out.removed_sublayers) == 3
    scores = out.details["importance"]
    chosen = {s.replace("attn", "attention") for s in out.removed_sublayers}
    assert max(scores[c] for c in chosen) <= min(v for k, v in scores.items() if k not in chosen)


def test_one_shot_and_iterative_agree_for_one_drop(calib_ids):
    for target in ("attention", "block"):
        a, b = random_llama(seed=0, layers=4), random_llama(seed=0, layers=4)
        one = what_matters.prune(a, calib_ids, what_matters.Config(layers=1, target=target), Context())
        it = what_matters.prune(
            b, calib_ids, what_matters.Config(layers=1, target=target, mode="iterative"), Context()
        )
        assert one.removed_layers == it.removed_layers and one.removed_sublayers == it.removed_sublayers
    model = random_llama(seed=0, layers=4)
    out = what_matters.prune(
        model, calib_ids, what_matters.Config(layers=2, target="block", mode="iterative"), Context()
    )
    assert len(set(out.removed_layers)) == 2 and model.config.num_hidden_layers == 2
