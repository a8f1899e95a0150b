"""RIA: the score by hand, its invariances, exact masks, and channel permutation for N:M."""

from __future__ import annotations

import pytest
import torch

from reference_impls import ria
from reference_impls.harness.contract import Context
from reference_impls.harness.models import random_llama
from reference_impls.primitives import masks


def test_score_on_a_hand_computed_example():
    w = torch.tensor([[1.0, -2.0, 3.0], [0.0, 4.0, -1.0], [2.0, 2.0, 0.0]])
    sq = torch.tensor([4.0, 1.0, 16.0])  # ||X_j|| = 2, 1, 4; a = 0.5 -> 2**0.5, 1, 2
    got = ria.ria_scores(w, sq, 0.5)
    # entry (0, 2): |3| / (3 + 1 + 0) + |3| / (1 + 2 + 3) = 0.75 + 0.5; times 4 ** 0.5 = 2
    assert got[0, 2] == pytest.approx((0.75 + 0.5) * 2.0)
    # entry (1, 1): 4 / (2 + 4 + 2) + 4 / (0 + 4 + 1) = 0.5 + 0.8; times 1
    assert got[1, 1] == pytest.approx(1.3)
    assert got[1, 0] == 0.0
    # a = 0 is the pure relative importance; scaling W leaves it unchanged
    assert torch.allclose(ria.ria_scores(w, sq, 0.0), ria.relative_importance(w))
    assert torch.allclose(ria.relative_importance(7.0 * w), ria.relative_importance(w))


def test_snake_permutation_is_a_permutation_dealing_one_channel_per_tier():
    score = torch.tensor([8.0, 1.0, 7.0, 2.0, 6.0, 3.0, 5.0, 4.0])
    perm = ria.snake_permutation(score, 4)
    assert sorted(perm.tolist()) == list(range(8))
    # sorted: 0(8) 2(7) | 4(6) 6(5) | 7(4) 5(3) | 3(2) 1(1); tiers go left-right, right-left, ...
    assert perm.tolist() == [0, 6, 7, 1, 2, 4, 5, 3]
    tiers = [set(perm[g * 4 : g * 4 + 4].tolist()) for g in range(2)]
    assert all(len(t & {0, 2}) == 1 for t in tiers)  # the two strongest channels are in different groups


def test_permuted_nm_mask_is_exact_in_permuted_coordinates_and_keeps_at_least_the_plain_score():
    gen = torch.Generator().manual_seed(0)
    total_perm = total_plain = 0.0
    for _ in range(20):
        score = torch.rand(16, 32, generator=gen) * torch.rand(32, generator=gen).pow(3) * 10
        perm = ria.snake_permutation(score.sum(0), 4)
        mask = ria.nm_mask_permuted(score, 2, 4, perm)
        grouped = mask[:, perm].reshape(16, -1, 4).sum(-1)
        assert (grouped == 2).all()  # 2:4 holds after applying the permutation
        plain = masks.nm_mask(score, 2, 4)
        total_perm += float(score[~mask].sum())
        total_plain += float(score[~plain].sum())
    assert total_perm >= total_plain  # the permutation avoids strong channels colliding in one group


def test_unstructured_counts_per_matrix_and_per_row(calib_ids):
    model = random_llama(seed=0)
    ria.prune(model, calib_ids, ria.Config(sparsity=0.5), Context())
    for layer in model.model.layers:
        w = layer.mlp.down_proj.weight
        assert int((w == 0).sum()) == masks.count_to_prune(w.numel(), 0.5)
    model = random_llama(seed=0)
    ria.prune(model, calib_ids, ria.Config(sparsity=0.5, scope="row"), Context())
    w = model.model.layers[0].self_attn.q_proj.weight
    assert ((w == 0).sum(1) == 32).all()


def test_nm_with_and_without_permutation_prunes_half_and_keeps_weights(calib_ids):
    dense = random_llama(seed=0)
    for permute in ("none", "heuristic"):
        model = random_llama(seed=0)
        ria.prune(model, calib_ids, ria.Config(pattern=(2, 4), permute=permute), Context())
        for (name, p), d in zip(model.named_parameters(), dense.parameters(), strict=True):
            if name.endswith("proj.weight"):
                assert int((p == 0).sum()) == p.numel() // 2 and ((p == 0).sum(1) == p.shape[1] // 2).all()
                assert torch.equal(p[p != 0], d[p != 0])
        w = model.model.layers[0].mlp.up_proj.weight
        in_place = ((w == 0).reshape(w.shape[0], -1, 4).sum(-1) == 2).all()
        assert bool(in_place) == (permute == "none")  # with a permutation, N:M holds in permuted order only
