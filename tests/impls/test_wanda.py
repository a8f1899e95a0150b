"""Wanda and magnitude: exact sparsity, N:M, and the identities the paper's metric implies."""

from __future__ import annotations

import pytest
import torch

from reference_impls import magnitude, wanda
from reference_impls.harness import layerwise
from reference_impls.harness.contract import Context
from reference_impls.primitives import masks


def _decoder_weights(model):
    return {name: lin.weight.detach().clone() for name, lin in layerwise.iter_decoder_linears(model)}


@pytest.mark.parametrize("sparsity", [0.5, 0.7])
def test_wanda_exact_per_row_sparsity(random_model, calib_ids, sparsity):
    wanda.prune(random_model, calib_ids, wanda.Config(sparsity=sparsity), Context())
    for _name, w in _decoder_weights(random_model).items():
        k = masks.count_to_prune(w.shape[1], sparsity)
        assert ((w == 0).sum(1) == k).all()


@pytest.mark.parametrize("pattern", [(2, 4), (4, 8)])
def test_wanda_exact_nm(random_model, calib_ids, pattern):
    n, m = pattern
    wanda.prune(random_model, calib_ids, wanda.Config(pattern=pattern), Context())
    for w in _decoder_weights(random_model).values():
        assert ((w == 0).reshape(w.shape[0], -1, m).sum(-1) == n).all()


def test_sparsity_zero_leaves_weights_unchanged(random_model, calib_ids):
    before = _decoder_weights(random_model)
    wanda.prune(random_model, calib_ids, wanda.Config(sparsity=0.0), Context())
    magnitude.prune(random_model, None, magnitude.Config(sparsity=0.0), Context())
    after = _decoder_weights(random_model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_wanda_mask_invariant_to_rescaling_an_input_feature():
    gen = torch.Generator().manual_seed(0)
    w, x = torch.randn(8, 16, generator=gen), torch.randn(100, 16, generator=gen)
    scale = torch.ones(16)
    scale[3], scale[11] = 50.0, 0.02
    cfg = wanda.Config(sparsity=0.5)
    before = wanda.wanda_mask(wanda.wanda_scores(w, x.square().sum(0)), cfg)
    w2, x2 = w / scale, x * scale  # same layer output
    after = wanda.wanda_mask(wanda.wanda_scores(w2, x2.square().sum(0)), cfg)
    assert torch.equal(before, after)
    assert not torch.equal(magnitude.magnitude_mask(w, magnitude.Config(scope="row")),
                           magnitude.magnitude_mask(w2, magnitude.Config(scope="row")))  # fmt: skip


def test_wanda_equals_row_magnitude_when_feature_norms_are_equal():
    w = torch.randn(6, 12)
    cfg = wanda.Config(sparsity=0.5)
    got = wanda.wanda_mask(wanda.wanda_scores(w, torch.full((12,), 3.0)), cfg)
    assert torch.equal(got, magnitude.magnitude_mask(w, magnitude.Config(sparsity=0.5, scope="row")))


def test_wanda_beats_row_magnitude_on_outlier_features():
    gen = torch.Generator().manual_seed(0)
    w, x = torch.randn(32, 64, generator=gen), torch.randn(512, 64, generator=gen)
    x[:, :4] *= 30  # a few large-scale input features, as in LLMs
    err_wanda = (x @ (w - wanda.prune_weight(w, x.square().sum(0), wanda.Config())).T).norm()
    keep = ~magnitude.magnitude_mask(w, magnitude.Config(scope="row"))
    err_mag = (x @ (w - w * keep).T).norm()
    assert err_wanda < err_mag


def test_magnitude_per_matrix_and_nm_counts(random_model):
    magnitude.prune(random_model, None, magnitude.Config(sparsity=0.5), Context())
    for w in _decoder_weights(random_model).values():
        assert int((w == 0).sum()) == w.numel() // 2


def test_fast_row_path_matches_mask_path():
    gen = torch.Generator().manual_seed(4)
    w, sq = torch.randn(16, 40, generator=gen), torch.rand(40, generator=gen)
    cfg = wanda.Config(sparsity=0.6)
    expected = w.masked_fill(wanda.wanda_mask(wanda.wanda_scores(w, sq), cfg), 0.0)
    assert torch.equal(wanda.prune_weight(w, sq, cfg), expected)
