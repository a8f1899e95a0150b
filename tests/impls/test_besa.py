"""BESA: gradients reach the logits, hard masks follow the learned sparsity, and every block's budget is exact."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from reference_impls import besa, wanda
from reference_impls.harness.contract import Context
from reference_impls.harness.models import random_llama
from reference_impls.primitives import masks


def _wrapper(cols: int = 40, rows: int = 6, smooth: bool = True) -> besa.BesaLinear:
    gen = torch.Generator().manual_seed(0)
    lin = nn.Linear(cols, rows, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(rows, cols, generator=gen))
    return besa.BesaLinear(lin, lin.weight.abs(), besa.candidates(0.01), smooth)


def test_candidates_and_gradient_reaches_the_logits():
    c = besa.candidates(0.01)
    assert len(c) == 101 and c[0] == 1.0 and c[-1] == 0.0
    w = _wrapper()
    assert float(w.sparsity().detach()) == pytest.approx(0.5)  # zero logits: the mean candidate
    out = w(torch.randn(3, 40)).square().sum()
    out.backward()
    assert w.logits.grad is not None and torch.isfinite(w.logits.grad).all() and w.logits.grad.abs().sum() > 0


def test_hard_mask_prunes_floor_s_in_per_row_and_one_hot_is_wanda():
    w = _wrapper(smooth=False)  # a one-hot choice needs unbounded logits (no sigmoid smoothing)
    with torch.no_grad():
        w.logits.copy_(torch.full((101,), -1e4))
        w.logits[40] = 1e4  # one-hot on p = 0.60
    mask = w.mask()
    assert ((mask == 0).sum(1) == masks.count_to_prune(40, 0.6)).all()
    expected = masks.row_mask(w.weight.abs(), 0.6)  # the same ranking as per-row Wanda at 60%
    assert torch.equal(mask == 0, expected)


def test_exact_counts_hit_the_block_budget():
    sizes = [4096, 1024, 1024, 8192]
    counts = besa.exact_counts([0.7, 0.2, 0.5, 0.65], sizes, 0.6)
    assert sum(counts) == masks.count_to_prune(sum(sizes), 0.6)
    assert all(0 <= c <= s for c, s in zip(counts, sizes, strict=True))
    score = torch.rand(7, 9)
    m = besa.count_mask(score, 25)  # 3 per row, 4 rows get a fourth
    assert int(m.sum()) == 25 and sorted(m.sum(1).tolist()) == [3, 3, 3, 4, 4, 4, 4]


def test_model_budget_exact_allocation_learned_and_block_penalty(calib_ids):
    model = random_llama(seed=0, layers=2)
    # the defaults at 60%: no sigmoid smoothing, 64 Prodigy steps per block (8 sequences, 8 passes)
    outcome = besa.prune(model, calib_ids, besa.Config(sparsity=0.6), Context())
    assert outcome.layer_sparsity == [0.6, 0.6]
    assert outcome.details["sigmoid_smooth"] is False and outcome.details["steps_per_block"] == 64
    for learned_block in outcome.details["learned_block_sparsity"]:
        assert abs(learned_block - 0.6) <= 0.03  # the budget penalty holds the learned mean near the target
    for layer, learned in zip(model.model.layers, outcome.details["linear_sparsity"], strict=True):
        weights = [m.weight for m in layer.modules() if isinstance(m, nn.Linear)]
        zeros = sum(int((w == 0).sum()) for w in weights)
        assert zeros == masks.count_to_prune(sum(w.numel() for w in weights), 0.6)  # exact per block
        assert max(learned) - min(learned) > 0.02  # non-uniform allocation inside the block
    dense = random_llama(seed=0, layers=2)
    for p, d in zip(model.parameters(), dense.parameters(), strict=True):
        assert torch.equal(p[p != 0], d[p != 0])  # weights frozen: only zeroed


@pytest.mark.parametrize("target", [0.5, 0.6])
def test_learned_sparsities_spread_away_from_the_target(calib_ids, target):
    """The allocation is learned, not uniform: the per-linear sparsities spread by more than 0.02 over the
    model, before and after the budget is made exact, both smoothed (50%) and unsmoothed (60%)."""
    model = random_llama(seed=0, layers=2)
    outcome = besa.prune(model, calib_ids, besa.Config(sparsity=target), Context())
    applied = [x for block in outcome.details["linear_sparsity"] for x in block]
    assert outcome.details["sigmoid_smooth"] is (target == 0.5)
    assert outcome.details["sparsity_spread"] == pytest.approx(max(applied) - min(applied), abs=1e-5)
    assert outcome.details["sparsity_spread"] > 0.02
    assert outcome.details["learned_sparsity_spread"] > 0.02


def test_smoothing_only_at_fifty_percent_and_what_each_can_reach():
    assert besa.smoothed(besa.Config(sparsity=0.5)) is True
    assert (
        besa.smoothed(besa.Config(sparsity=0.6)) is False
        and besa.smoothed(besa.Config(sparsity=0.4)) is False
    )
    assert besa.smoothed(besa.Config(sparsity=0.6, sigmoid_smooth=True)) is True
    smooth, plain = _wrapper(smooth=True), _wrapper(smooth=False)
    high = torch.where(
        besa.candidates(0.01) > 0.5, 1e4, -1e4
    )  # every candidate above 50% as likely as can be
    with torch.no_grad():
        smooth.logits.copy_(high)
        plain.logits.copy_(high)
    # smoothed: no candidate more than e times as likely as another, so s_hat stops at 0.6237 (exact bound)
    weights = torch.where(besa.candidates(0.01) > 0.5, math.e, 1.0)
    bound = float((weights * besa.candidates(0.01)).sum() / weights.sum())
    assert float(smooth.sparsity().detach()) == pytest.approx(bound, abs=1e-4) and bound < 0.63
    assert float(plain.sparsity().detach()) == pytest.approx(0.755, abs=1e-4)  # the mean of 0.51 ... 1.00


def test_step_count_is_full_passes_or_at_least_min_steps():
    assert besa.step_count(32, besa.Config(sparsity=0.5)) == 64  # one pass of 32 is not enough: two
    assert besa.step_count(32, besa.Config(sparsity=0.5, epochs=3)) == 96
    assert besa.step_count(40, besa.Config(sparsity=0.5, min_steps=50)) == 50  # the second pass is partial
    assert besa.step_count(0, besa.Config(sparsity=0.5)) == 0
    assert besa.step_count(8, besa.Config(sparsity=0.5, epochs=0, min_steps=0)) == 0


def test_block_loss_is_zero_for_equal_outputs_and_scale_free():
    y = torch.randn(2, 5, 4)
    assert float(besa.block_loss(y, y)) == 0.0
    z = y + 0.1 * torch.randn_like(y)
    assert float(besa.block_loss(3 * y, 3 * z)) == pytest.approx(float(besa.block_loss(y, z)), rel=1e-5)


def test_wanda_scores_used_for_ranking(calib_ids):
    """With the penalty dominating and no epochs, every linear ends at the target: per-row Wanda counts."""
    model = random_llama(seed=0, layers=2)
    besa.prune(model, calib_ids, besa.Config(sparsity=0.5, epochs=0, min_steps=0), Context())
    ref = random_llama(seed=0, layers=2)
    wanda.prune(ref, calib_ids, wanda.Config(sparsity=0.5), Context())
    a, b = model.model.layers[0].self_attn.q_proj.weight, ref.model.layers[0].self_attn.q_proj.weight
    assert torch.equal(a == 0, b == 0)


def test_rank_order_forward_equals_the_masked_linear_with_the_same_gradient():
    w = _wrapper()
    with torch.no_grad():
        w.logits.copy_(torch.randn(len(w.logits), generator=torch.Generator().manual_seed(3)))
    x = torch.randn(3, 40, generator=torch.Generator().manual_seed(4))
    fast = w(x).square().sum()
    (g_fast,) = torch.autograd.grad(fast, w.logits)
    slow = nn.functional.linear(x, w.weight * w.mask()).square().sum()
    (g_slow,) = torch.autograd.grad(slow, w.logits)
    assert torch.allclose(fast, slow, rtol=1e-5)
    assert torch.allclose(g_fast, g_slow, rtol=1e-4, atol=1e-7)


def test_sigmoid_smoothing_bounds_the_candidate_probabilities():
    w = _wrapper()
    assert float(w.sparsity()) == pytest.approx(0.5, abs=1e-6)  # zero logits: uniform over 1.00 ... 0.00
    with torch.no_grad():
        w.logits.copy_(torch.linspace(-50, 50, len(w.logits)))
    beta = w.beta()
    assert float(beta.max() / beta.min()) <= math.e + 1e-4  # softmax of values in (0, 1)


def test_a_budget_shortfall_is_spread_over_every_linear():
    # learned sparsities below the 60% budget: all move up by the same amount, none is emptied
    sizes = [4096, 1024, 1024, 8192]
    counts = besa.exact_counts([0.55, 0.45, 0.5, 0.5], sizes, 0.6)
    assert sum(counts) == masks.count_to_prune(sum(sizes), 0.6)
    got = [c / n for c, n in zip(counts, sizes, strict=True)]
    shift = got[0] - 0.55
    assert shift > 0.05
    for g, s in zip(got, [0.55, 0.45, 0.5, 0.5], strict=True):
        assert g == pytest.approx(s + shift, abs=2e-3)
    # a shift that would push one past 100% clips it and gives the rest to the others
    counts = besa.exact_counts([0.95, 0.1], [100, 100], 0.6)
    assert counts == [100, 20]


def test_split_windows_keeps_every_token_in_order():
    calib = torch.arange(2 * 10).reshape(2, 10)
    out = besa.split_windows(calib, 4)
    assert out.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [10, 11, 12, 13], [14, 15, 16, 17]]
    assert besa.split_windows(calib, None) is calib and besa.split_windows(calib, 10) is calib
