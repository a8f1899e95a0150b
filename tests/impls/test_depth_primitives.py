"""Shared depth pieces: residual streams, sublayer statistics, loss-based scores, Shapley, selection rules."""

from __future__ import annotations

import math

import pytest
import torch

from reference_impls.harness.models import random_llama
from reference_impls.primitives import blocks, selection


def _zero_branch(model, index, part):
    with torch.no_grad():
        if part in ("attention", "block"):
            model.model.layers[index].self_attn.o_proj.weight.zero_()
        if part in ("mlp", "block"):
            model.model.layers[index].mlp.down_proj.weight.zero_()


def test_residual_streams_match_output_hidden_states(calib_ids):
    model = random_llama(seed=0, layers=3)
    states = blocks.residual_streams(model, calib_ids[:2])
    assert len(states) == 4
    with torch.inference_mode():
        hidden = model(calib_ids[:2], output_hidden_states=True, use_cache=False).hidden_states
    for i in range(3):  # the last hidden state has the final norm applied
        torch.testing.assert_close(states[i], hidden[i])


def test_window_cosines_and_io_are_consistent(calib_ids):
    model = random_llama(seed=0, layers=4)
    cos = blocks.window_cosines(model, calib_ids, 2, batch_size=3)
    assert len(cos) == 3 and all(c.numel() == calib_ids.numel() for c in cos)
    last = blocks.window_cosines(model, calib_ids, 2, last_token=True)
    assert all(c.numel() == calib_ids.shape[0] for c in last)
    x, y = blocks.window_io(model, calib_ids, 1, 2, batch_size=5)
    torch.testing.assert_close(blocks.token_cosine(x, y), cos[1])


def test_sublayer_stats_see_a_zeroed_branch_as_identity(calib_ids):
    model = random_llama(seed=0, layers=3)
    _zero_branch(model, 1, "attention")
    _zero_branch(model, 2, "block")
    stats = blocks.sublayer_stats(model, calib_ids, batch_size=3)
    assert stats.attention_cos[1] == pytest.approx(1.0, abs=1e-6)
    assert stats.block_cos[2] == pytest.approx(1.0, abs=1e-6) and stats.mlp_cos[2] == pytest.approx(
        1.0, abs=1e-6
    )
    assert stats.attention_cos[0] < 1 - 1e-4 and stats.mlp_cos[1] < 1 - 1e-4
    assert float(stats.attention_mean[1].abs().max()) == 0.0
    # the mean update is the mean of the branch output over every calibration token
    captured = []
    handle = model.model.layers[0].mlp.register_forward_hook(lambda _m, _a, out: captured.append(out))
    with torch.inference_mode():
        model(calib_ids, use_cache=False)
    handle.remove()
    torch.testing.assert_close(stats.mlp_mean[0], captured[0].reshape(-1, 64).mean(0), rtol=1e-4, atol=1e-6)


def test_bypassing_equals_zeroing_and_restores_the_model(calib_ids):
    model = random_llama(seed=0, layers=3)
    zeroed = random_llama(seed=0, layers=3)
    _zero_branch(zeroed, 1, "block")
    _zero_branch(zeroed, 2, "attention")
    with torch.inference_mode():
        dense = model(calib_ids[:2]).logits
        with blocks.bypassed(model, [("block", 1), ("attention", 2)]):
            skipped = model(calib_ids[:2]).logits
        again = model(calib_ids[:2]).logits
        torch.testing.assert_close(skipped, zeroed(calib_ids[:2]).logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(dense, again)


def test_removal_loss_of_an_identity_block_is_the_dense_loss(calib_ids):
    model = random_llama(seed=0, layers=3)
    _zero_branch(model, 1, "block")
    dense = blocks.mean_loss(model, calib_ids)
    losses = blocks.removal_losses(model, calib_ids, [("block", i) for i in range(3)], batch_size=4)
    assert losses[1] == pytest.approx(dense, rel=1e-6)
    assert losses[0] != pytest.approx(dense, rel=1e-4)


def test_taylor_of_a_zero_layer_is_zero_and_magnitude_orders(calib_ids):
    model = random_llama(seed=0, layers=3)
    with torch.no_grad():
        for p in model.model.layers[2].parameters():
            p.zero_()
    taylor = blocks.block_taylor(model, calib_ids[:2])
    assert taylor[2] == 0.0 and taylor[0] > 0 and taylor[1] > 0
    l1, l2 = blocks.block_magnitude(model, 1), blocks.block_magnitude(model, 2)
    assert l1[2] == l2[2] == 0.0 and min(l1[:2]) > 0 and min(l2[:2]) > 0


def test_shapley_estimates_are_efficient_and_exact_on_an_additive_game():
    weights = [0.5, -1.0, 2.0, 0.25]

    def additive(s):
        return sum(weights[i] for i in s)

    assert blocks.shapley_exact(additive, 4) == pytest.approx(weights)
    assert blocks.shapley_permutations(additive, 4, 3, seed=1) == pytest.approx(weights)

    def game(s):  # with an interaction
        return float(len(s) ** 2 + (3.0 if {0, 2} <= s else 0.0))

    exact = blocks.shapley_exact(game, 3)
    mc = blocks.shapley_permutations(game, 3, 5, seed=0)
    full, none = game(frozenset(range(3))), game(frozenset())
    assert sum(exact) == pytest.approx(full - none) and sum(mc) == pytest.approx(full - none)
    assert exact[0] == pytest.approx(exact[2]) and exact[0] > exact[1]


def test_shapley_on_a_two_layer_model_by_enumeration(calib_ids):
    model = random_llama(seed=0, layers=2)
    ids = calib_ids[:2, :32]

    def value(present):
        with blocks.bypassed(model, [("block", i) for i in range(2) if i not in present]):
            return -blocks.mean_loss(model, ids)

    exact = blocks.shapley_exact(value, 2)
    assert sum(exact) == pytest.approx(value(frozenset({0, 1})) - value(frozenset()), rel=1e-6)


def test_selection_rules():
    assert selection.contiguous_windows(5, 2) == [[0, 1], [1, 2], [2, 3], [3, 4]]
    assert selection.best_window([0.3, 0.1, 0.1, 0.5]) == 1
    assert selection.best_window([0.3, 0.1, 0.9, 0.9], lowest=False) == 2
    assert selection.individual([0.3, 0.1, 0.5, 0.1], 2) == [1, 3]
    assert selection.individual([0.3, 0.1, 0.5, 0.1], 1, lowest=False) == [2]
    assert selection.reverse_order(10, 3) == [7, 8, 9]
    with pytest.raises(ValueError):
        selection.reverse_order(3, 3)


def test_progressive_rescoring_and_budget():
    calls = []
    removed = []
    cost = {"a": 3, "b": 1, "c": 2, "d": 5}

    def score(remaining):
        calls.append(list(remaining))
        return {c: float(ord(c)) for c in remaining}

    result = selection.progressive(list(cost), score, cost.__getitem__, 4, removed.append, per_round=1)
    assert removed == ["a", "b"] and result.cost == 4 and len(calls) == 2 and calls[1] == ["b", "c", "d"]
    removed.clear()
    calls.clear()
    result = selection.progressive(list(cost), score, cost.__getitem__, 6, removed.append, per_round=2)
    assert removed == ["a", "b", "c"] and result.cost == 6 and len(calls) == 2
    with pytest.raises(ValueError):
        selection.progressive(["b"], score, cost.__getitem__, 2, removed.append)
    assert math.isfinite(result.cost)
