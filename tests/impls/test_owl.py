"""OWL: the allocation invariants from the paper's mapping, and per-layer sparsities applied exactly."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reference_impls import owl, wanda
from reference_impls.harness.contract import Context
from reference_impls.harness.models import random_llama
from reference_impls.primitives import masks


@settings(max_examples=60, deadline=None)
@given(ratios=st.lists(st.floats(0, 20, allow_nan=False), min_size=2, max_size=40),
       sparsity=st.floats(0.1, 0.9), lam=st.floats(0, 0.1))  # fmt: skip
def test_mean_is_the_target_and_spread_is_two_lambda(ratios, sparsity, lam):
    s = owl.layer_sparsities(ratios, sparsity, lam)
    assert sum(s) / len(s) == pytest.approx(sparsity, abs=1e-9)
    if max(ratios) > min(ratios):
        assert max(s) - min(s) == pytest.approx(2 * lam, abs=1e-9)
        # more outliers -> lower sparsity (monotone decreasing map)
        order = sorted(range(len(ratios)), key=lambda i: ratios[i])
        assert all(s[a] >= s[b] - 1e-12 for a, b in itertools.pairwise(order))
        assert s[max(range(len(ratios)), key=ratios.__getitem__)] == pytest.approx(min(s))
    else:
        assert s == [sparsity] * len(ratios)


def test_outlier_ratio_oracle():
    scores = [torch.tensor([[1.0, 1.0, 1.0, 1.0]]), torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0, 15.0]])]
    # pooled mean = (9 + 15) / 10 = 2.4; threshold M=5 -> 12: one score of ten is above
    assert owl.outlier_ratio(scores, 5.0) == pytest.approx(0.1)
    assert owl.outlier_ratio(scores, 7.0) == 0.0


def test_the_layer_with_most_outliers_is_pruned_least_and_ratios_are_applied(calib_ids):
    model = random_llama(seed=0, layers=4)
    ratios = owl.outlier_ratios(model, calib_ids, 5.0, Context())  # a dense pass: weights untouched
    assert len(set(ratios)) > 1
    cfg = owl.Config(sparsity=0.6, lam=0.08)
    outcome = owl.prune(model, calib_ids, cfg, Context())
    s = outcome.layer_sparsity
    assert s is not None and len(s) == 4
    assert outcome.details["outlier_ratio_percent"] == [round(100 * r, 4) for r in ratios]
    assert min(range(4), key=s.__getitem__) == max(range(4), key=ratios.__getitem__)
    assert sum(s) / 4 == pytest.approx(0.6) and max(s) - min(s) == pytest.approx(0.16)
    for i, layer in enumerate(model.model.layers):  # each row of each linear pruned to its layer's ratio
        for lin in (layer.self_attn.q_proj, layer.mlp.down_proj):
            k = masks.count_to_prune(lin.weight.shape[1], s[i])
            assert ((lin.weight == 0).sum(1) == k).all()


def test_equal_outlier_ratios_fall_back_to_uniform_wanda(calib_ids):
    """With lambda = 0 every layer gets the target: OWL-Wanda is exactly uniform Wanda."""
    a, b = random_llama(seed=0, layers=3), random_llama(seed=0, layers=3)
    owl.prune(a, calib_ids, owl.Config(sparsity=0.5, lam=0.0), Context())
    wanda.prune(b, calib_ids, wanda.Config(sparsity=0.5), Context())
    assert all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_sparsegpt_base_reaches_the_allocated_ratios(calib_ids):
    model = random_llama(seed=0, layers=3)
    outcome = owl.prune(model, calib_ids, owl.Config(sparsity=0.5, base="sparsegpt"), Context())
    assert outcome.details["base"] == "sparsegpt"
    for i, layer in enumerate(model.model.layers):  # up_proj has 64 inputs: one SparseGPT block per matrix
        w = layer.mlp.up_proj.weight
        assert int((w == 0).sum()) == masks.count_to_prune(w.numel(), outcome.layer_sparsity[i])


def test_a_low_target_clips_at_zero_and_keeps_the_mean_exact(calib_ids):
    # at 5% with lambda 0.08 the layer with the most outliers would get a negative sparsity
    model = random_llama(seed=0, layers=4)
    ratios = owl.outlier_ratios(model, calib_ids, 5.0, Context())
    raw = owl.layer_sparsities(ratios, 0.05, 0.08)
    assert min(raw) < 0
    logged: list[str] = []
    outcome = owl.prune(model, calib_ids, owl.Config(sparsity=0.05, lam=0.08), Context(log=logged.append))
    s = outcome.layer_sparsity
    assert s is not None and min(s) == 0.0 and sum(s) / 4 == pytest.approx(0.05, abs=1e-9)
    assert any("clipped" in line for line in logged)
    order = sorted(range(4), key=raw.__getitem__)
    assert sorted(range(4), key=lambda i: (s[i], raw[i])) == order  # the ranking of the layers is kept
