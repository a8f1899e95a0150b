"""Oracles for the pure mask helpers and the shared option types."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from kb.errors import KBError
from reference_impls.harness import options as config
from reference_impls.primitives import masks


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 9), cols=st.integers(1, 40), sparsity=st.floats(0, 0.99), seed=st.integers(0, 9))
def test_row_mask_prunes_exactly_floor_per_row(rows, cols, sparsity, seed):
    score = torch.rand(rows, cols, generator=torch.Generator().manual_seed(seed))
    mask = masks.row_mask(score, sparsity)
    k = masks.count_to_prune(cols, sparsity)
    assert mask.sum(1).tolist() == [k] * rows
    if 0 < k < cols:  # the pruned ones are the lowest of their row
        assert (
            score[mask].reshape(rows, k).max(1).values <= score[~mask].reshape(rows, -1).min(1).values
        ).all()


def test_matrix_mask_is_exact_even_with_ties():
    score = torch.ones(6, 10)
    score[0, :3] = 0
    mask = masks.matrix_mask(score, 0.5)
    assert int(mask.sum()) == 30
    assert mask[0, :3].all()


def test_matrix_mask_picks_global_lowest():
    score = torch.arange(12.0).reshape(3, 4).flip(0)
    assert masks.matrix_mask(score, 0.25).nonzero().tolist() == [[2, 0], [2, 1], [2, 2]]


@pytest.mark.parametrize(("n", "m"), [(1, 4), (2, 4), (3, 4), (4, 8)])
def test_nm_mask_exact_in_every_group(n, m):
    score = torch.randn(5, 4 * m)
    mask = masks.nm_mask(score, n, m)
    assert (mask.reshape(5, -1, m).sum(-1) == n).all()


def test_nm_mask_rejects_indivisible_width():
    with pytest.raises(ValueError):
        masks.nm_mask(torch.randn(2, 6), 2, 4)


@pytest.mark.parametrize("text", ["3:2", "a:b", "0:4", "4:4", "2", "2:4:8", "-1:4", ""])
def test_parse_pattern_rejects(text):
    with pytest.raises(KBError):
        config.parse_pattern(text)


def test_pattern_forces_sparsity_and_config_forbids_unknown_keys():
    from reference_impls import sparsegpt, wanda

    assert wanda.Config(pattern="2:4").sparsity == 0.5
    assert wanda.Config(pattern=(4, 8), sparsity=0.3).sparsity == 0.5
    with pytest.raises(KBError, match="wanda option foo"):
        config.build_config(wanda.Config, {"foo": 1})
    with pytest.raises(KBError, match="sparsity"):
        config.build_config(wanda.Config, {"sparsity": 1.0})
    with pytest.raises(KBError, match="multiple of M"):
        config.build_config(sparsegpt.Config, {"pattern": (2, 4), "blocksize": 6})
    cfg = wanda.Config()
    with pytest.raises(ValidationError):
        cfg.sparsity = 0.1  # frozen


def test_kth_smallest_on_a_large_tensor_is_exactly_kthvalue_including_ties_and_the_ends():
    gen = torch.Generator().manual_seed(3)
    n = 5_000_000  # above the size where the sampled bracket takes over
    for values in (torch.randn(n, generator=gen), torch.randint(0, 40, (n,), generator=gen).float()):
        for k in (1, 2, n // 1000, n // 3, n // 2, n - 1, n):
            assert masks.kth_smallest(values, k) == values.kthvalue(k).values
    skewed = torch.cat([torch.zeros(n - 10), torch.arange(10.0)])  # nearly all ties at the low end
    assert masks.kth_smallest(skewed, n - 5) == skewed.kthvalue(n - 5).values
    mask = masks.lowest_k_mask(skewed, n - 5)
    assert int(mask.sum()) == n - 5 and not mask[-5:].any()
