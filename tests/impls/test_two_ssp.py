"""2SSP on `random-llama`: the budget split (Eq. 5), the neuron norms of stage 1, the greedy attention search of
stage 2, the `params` target, and a saved model that reloads and generates."""

from __future__ import annotations

import copy

import pytest
import torch
from savedmodels import fresh_process, greedy, save_checked

from kb.errors import KBError
from reference_impls import two_ssp as T
from reference_impls.harness.contract import Context
from reference_impls.harness.models import random_llama
from reference_impls.harness.structure import skip_sublayers
from reference_impls.primitives import groups as G
from reference_impls.primitives.blocks import removal_losses
from reference_impls.primitives.importance import lowest

# SmolLM2-135M (tiny-llama): one attention (q, k, v, o with 3 KV heads), one MLP, one attention plus its pre-norm
ATTN, MLP, SKIP, TOTAL = 884736, 2654208, 884736 + 576, 30 * (884736 + 2654208 + 2 * 576)


def _decoder(model) -> int:
    return sum(p.numel() for p in model.model.layers.parameters())


def test_the_budget_split_on_tiny_llama_shapes():
    # Eq. 5 with alpha 1.5: P_mlp / P_attn = 3, so N = round(30 * s^2)
    assert [T.attention_count(30, s, MLP, ATTN, 1.5) for s in (0.25, 0.375, 0.5)] == [2, 4, 8]
    keep = T.mlp_keep(30, 0.25, TOTAL, SKIP, 2, MLP, 1536)
    assert keep == 1058
    removed = 2 * SKIP + 30 * (1536 - keep) * 3 * 576
    assert removed / TOTAL == pytest.approx(0.25, abs=1e-4)
    assert T.mlp_keep(30, 0.25, TOTAL, SKIP, 0, MLP, 1536) == 1024  # stage 1 alone: 1/3 of every MLP
    assert T.attention_count(30, 0.25, MLP, ATTN, 3.0) == 8  # a larger alpha moves the budget to attention
    with pytest.raises(KBError, match="more than"):
        T.mlp_keep(30, 0.03, TOTAL, SKIP, 5, MLP, 1536)
    with pytest.raises(KBError, match="cannot remove"):
        T.mlp_keep(30, 0.9, TOTAL, SKIP, 0, MLP, 1536)


def test_neuron_norms_are_per_sequence_l2_norms_averaged_over_sequences(calib_ids):
    model = random_llama(seed=0, layers=2)
    seen: list[torch.Tensor] = []
    hook = model.model.layers[1].mlp.down_proj.register_forward_pre_hook(lambda _m, a: seen.append(a[0]))
    with torch.inference_mode():
        model(calib_ids[:3])
    hook.remove()
    x = seen[0].float()  # (3, 64, 128): the activation of every neuron at every token
    expected = x.norm(dim=1).mean(0)
    families = [G.mlp_family(model, i) for i in range(2)]
    got = T.neuron_norms(model, families, calib_ids[:3])
    torch.testing.assert_close(got[1], expected, rtol=1e-5, atol=1e-6)
    pooled = x.reshape(-1, x.shape[-1]).norm(dim=0)  # one norm over all tokens ranks differently in general
    assert not torch.allclose(got[1], pooled)


def test_stage_one_keeps_the_same_top_neurons_count_in_every_layer(calib_ids):
    dense = random_llama(seed=0, layers=4)
    model = copy.deepcopy(dense)
    out = T.prune(model, calib_ids, T.Config(attention=0), Context())
    assert out.removed_sublayers == [] and out.details["order"] == []
    width, keep = out.details["mlp_width"]
    assert width == 128 and keep == 80  # a quarter of the layers' parameters from the MLPs: 37.5% of each
    scores = T.neuron_norms(dense, [G.mlp_family(dense, i) for i in range(4)], calib_ids)
    for i in range(4):
        kept = [u for u in range(width) if u not in lowest(scores[i], width - keep)]
        torch.testing.assert_close(model.model.layers[i].mlp.down_proj.weight,
                                   dense.model.layers[i].mlp.down_proj.weight[:, kept])  # fmt: skip
    assert 1 - _decoder(model) / _decoder(dense) == pytest.approx(0.25, abs=0.005)


def test_stage_two_drops_the_attention_with_the_lowest_loss_one_at_a_time(calib_ids):
    """An independent replay on the primitives: stage 1 with the same widths, then at each step the attention whose
    bypass gives the lowest loss on the first window, re-scored after every removal."""
    dense = random_llama(seed=0, layers=4)
    model = copy.deepcopy(dense)
    out = T.prune(model, calib_ids, T.Config(attention=2), Context())
    width, keep = out.details["mlp_width"]
    replay = copy.deepcopy(dense)
    families = [G.mlp_family(replay, i) for i in range(4)]
    scores = T.neuron_norms(replay, families, calib_ids)
    G.compact(replay, {f: lowest(s, width - keep) for f, s in zip(families, scores, strict=True)})
    order, ids = [], calib_ids[:1]
    for _ in range(2):
        left = [i for i in range(4) if i not in order]
        losses = removal_losses(replay, ids, [("attention", i) for i in left])
        order.append(left[min(range(len(left)), key=lambda j: (losses[j], j))])
        skip_sublayers(replay, attention=[order[-1]])
    assert out.details["order"] == order
    assert out.removed_sublayers == [f"{i}.attn" for i in sorted(order)]
    assert model.config.skipped_attention == sorted(order)
    with torch.inference_mode():
        torch.testing.assert_close(model(calib_ids[:2]).logits, replay(calib_ids[:2]).logits)


def test_the_params_target_is_the_rate_and_is_met(calib_ids):
    model = random_llama(seed=0, layers=4)
    dense = _decoder(model)
    out = T.prune(model, calib_ids, T.Config(rate=0.1, params=0.4), Context())
    assert out.details["rate"] == 0.4
    assert out.details["attention_rule"] == out.details["attention_dropped"] == 1
    assert 1 - _decoder(model) / dense == pytest.approx(0.4, abs=0.005)
    assert out.details["params_removed_fraction"] == pytest.approx(1 - _decoder(model) / dense, abs=1e-6)


def test_refusals(calib_ids):
    with pytest.raises(KBError, match="cannot drop 5"):
        T.prune(random_llama(seed=0, layers=4), calib_ids, T.Config(attention=5), Context())
    skipped = random_llama(seed=0, layers=4)
    skip_sublayers(skipped, attention=[1])
    with pytest.raises(KBError, match="same attention and MLP sizes"):
        T.prune(skipped, calib_ids, T.Config(), Context())


def test_a_saved_2ssp_model_reloads_and_generates(calib_ids, tmp_path):
    model = random_llama(seed=0, layers=4)
    out = T.prune(model, calib_ids, T.Config(rate=0.4), Context())
    assert out.removed_sublayers  # both stages acted: narrower MLPs and skipped attention sublayers
    check = save_checked(model, tmp_path / "saved")
    assert check["max_abs_logit_diff"] <= check["relative_tolerance"] * check["logit_scale"]
    got = fresh_process(tmp_path / "saved", tmp_path)
    assert got["tokens"] == greedy(model)[0].tolist()
    assert got["params"] == sum(p.numel() for p in model.parameters())
