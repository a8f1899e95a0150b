"""Pruner-Zero: the searched metric, its gradient statistic, and exact per-row / N:M sparsity."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from reference_impls import magnitude, pruner_zero
from reference_impls.harness import layerwise
from reference_impls.harness.contract import Context
from reference_impls.primitives import masks


def _weights(model):
    return {name: lin.weight.detach().clone() for name, lin in layerwise.iter_decoder_linears(model)}


def test_metric_oracle():
    w = torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.0, -1.0]])
    g = torch.tensor([[2.0, 4.0, 6.0], [10.0, 2.0, 8.0]])  # min 2, max 10
    expected = torch.tensor([[1 * 0.0, 4 * 0.25, 0.25 * 0.5], [9 * 1.0, 0.0, 1 * 0.75]])
    assert torch.allclose(pruner_zero.pruner_zero_scores(w, g), expected)
    assert torch.equal(pruner_zero.min_max(torch.full((2, 2), 3.0)), torch.ones(2, 2))


def test_mask_ignores_gradient_scale_and_weight_sign():
    gen = torch.Generator().manual_seed(0)
    w, g = torch.randn(8, 32, generator=gen), torch.rand(8, 32, generator=gen)
    cfg = pruner_zero.Config(sparsity=0.5)
    base = pruner_zero.prune_weight(w, g, cfg) == 0
    assert torch.equal(base, pruner_zero.prune_weight(-w, 100 * g + 0.0, cfg) == 0)  # upstream's x100 scale
    assert torch.equal(base, pruner_zero.prune_weight(w, 3 * g, cfg) == 0)


def test_constant_gradient_is_row_magnitude_and_gradients_change_the_mask():
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(6, 16, generator=gen)
    cfg = pruner_zero.Config(sparsity=0.5)
    row_mag = magnitude.magnitude_mask(w, magnitude.Config(sparsity=0.5, scope="row"))
    assert torch.equal(pruner_zero.prune_weight(w, torch.ones(6, 16), cfg) == 0, row_mag)
    g = torch.ones(6, 16)
    g[:, :4] = 50.0  # large gradients protect small weights
    assert not torch.equal(pruner_zero.prune_weight(w, g, cfg) == 0, row_mag)


def test_gradient_norms_are_the_per_sequence_l2_norm(random_model, calib_ids):
    ids = calib_ids[:3]
    got = pruner_zero.gradient_norms(random_model, ids, Context())
    q = random_model.model.layers[1].self_attn.q_proj.weight
    sq = torch.zeros_like(q)
    for seq in ids:  # oracle: one sequence at a time, plain autograd
        random_model.zero_grad()
        logits = random_model(input_ids=seq[None]).logits[0, :-1]
        F.cross_entropy(logits, seq[1:]).backward()
        sq += q.grad.square()
    random_model.zero_grad()
    expected = sq.sqrt() / 3**0.5  # G up to the constant min-max scaling removes
    assert torch.allclose(got["layers.1.self_attn.q_proj"], expected, rtol=1e-4, atol=1e-7)
    assert set(got) == set(_weights(random_model))


@pytest.mark.parametrize("sparsity", [0.5, 0.7])
def test_exact_per_row_sparsity_and_selection_order(random_model, calib_ids, sparsity):
    dense = _weights(random_model)
    norms = pruner_zero.gradient_norms(copy.deepcopy(random_model), calib_ids, Context())
    pruner_zero.prune(random_model, calib_ids, pruner_zero.Config(sparsity=sparsity), Context())
    for name, w in _weights(random_model).items():
        k = masks.count_to_prune(w.shape[1], sparsity)
        pruned = w == 0
        assert (pruned.sum(1) == k).all()
        assert torch.equal(w[~pruned], dense[name][~pruned])  # no weight update
        score = pruner_zero.pruner_zero_scores(dense[name], norms[name])
        worst_kept = score.masked_fill(pruned, float("inf")).min(1).values
        best_pruned = score.masked_fill(~pruned, float("-inf")).max(1).values
        assert (best_pruned <= worst_kept).all()  # every row removes its k lowest scores


def test_exact_nm(random_model, calib_ids):
    pruner_zero.prune(random_model, calib_ids, pruner_zero.Config(pattern=(2, 4)), Context())
    for w in _weights(random_model).values():
        assert ((w == 0).reshape(w.shape[0], -1, 4).sum(-1) == 2).all()


def test_progress_reaches_the_end(random_model, calib_ids):
    seen: list[tuple[int, int]] = []
    pruner_zero.prune(
        random_model, calib_ids, pruner_zero.Config(), Context(progress=lambda d, t: seen.append((d, t)))
    )
    total = calib_ids.shape[0] + len(_weights(random_model))  # one step per sequence, then one per linear
    assert {t for _, t in seen} == {total} and [d for d, _ in seen] == list(range(1, total + 1))
