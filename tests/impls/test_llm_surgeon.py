"""LLM Surgeon: closed-form Kronecker OBS costs and updates against brute force, exact budgets, zeros kept."""

from __future__ import annotations

import pytest
import torch

from reference_impls import llm_surgeon as ls
from reference_impls.harness.contract import Context, model_facts
from reference_impls.harness.layerwise import iter_decoder_linears
from reference_impls.harness.models import random_llama
from reference_impls.primitives.masks import count_to_prune


def _spd(n: int, gen: torch.Generator) -> torch.Tensor:
    x = torch.randn(n, 2 * n, generator=gen, dtype=torch.float64)
    return x @ x.T / (2 * n) + 0.1 * torch.eye(n, dtype=torch.float64)


def _brute_force(w: torch.Tensor, g: torch.Tensor, a: torch.Tensor, removed: torch.Tensor):
    """Constrained OBS with the explicit Fisher kron(G, A) (row-major vec): (cost, new weight)."""
    f_inv = torch.linalg.inv(torch.kron(g, a))
    idx = removed.reshape(-1).nonzero().squeeze(1)
    vec = w.reshape(-1)
    sub = f_inv[idx][:, idx]
    lam = torch.linalg.solve(sub, vec[idx])
    delta = -f_inv[:, idx] @ lam
    return 0.5 * float(vec[idx] @ lam), (vec + delta).reshape(w.shape)


@pytest.fixture
def problem():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    g, a = _spd(6, gen), _spd(5, gen)
    return w, g, a, torch.linalg.inv(g), torch.linalg.inv(a)


def test_row_costs_and_joint_row_update_match_brute_force(problem):
    w, g, a, g_inv, _a_inv = problem
    costs = ls.row_costs(w, a, torch.diagonal(g_inv))
    for r in range(6):
        removed = torch.zeros(6, 5, dtype=torch.bool)
        removed[r] = True
        cost, new = _brute_force(w, g, a, removed)
        assert float(costs[r]) == pytest.approx(cost, rel=1e-6)
        assert torch.allclose(ls.remove_rows(w, g_inv[:, [r]], torch.tensor([r])), new, atol=1e-8)
    removed = torch.zeros(6, 5, dtype=torch.bool)
    removed[[1, 4]] = True
    _cost, new = _brute_force(w, g, a, removed)
    got = ls.remove_rows(w, g_inv[:, [1, 4]], torch.tensor([1, 4]))
    assert torch.allclose(got, new, atol=1e-8) and (got[[1, 4]] == 0).all()


def test_column_costs_and_joint_column_update_match_brute_force(problem):
    w, g, a, _g_inv, a_inv = problem
    costs = ls.col_costs(w, g, torch.diagonal(a_inv))
    for c in range(5):
        removed = torch.zeros(6, 5, dtype=torch.bool)
        removed[:, c] = True
        cost, new = _brute_force(w, g, a, removed)
        assert float(costs[c]) == pytest.approx(cost, rel=1e-6)
        assert torch.allclose(ls.remove_cols(w, a_inv[:, [c]], torch.tensor([c])), new, atol=1e-8)
    removed = torch.zeros(6, 5, dtype=torch.bool)
    removed[:, [0, 3]] = True
    _cost, new = _brute_force(w, g, a, removed)
    got = ls.remove_cols(w, a_inv[:, [0, 3]], torch.tensor([0, 3]))
    assert torch.allclose(got, new, atol=1e-8) and (got[:, [0, 3]] == 0).all()


def test_element_cost_matches_brute_force(problem):
    w, g, a, g_inv, a_inv = problem
    costs = ls.element_costs(w, torch.diagonal(g_inv), torch.diagonal(a_inv))
    removed = torch.zeros(6, 5, dtype=torch.bool)
    removed[2, 3] = True
    cost, _new = _brute_force(w, g, a, removed)
    assert float(costs[2, 3]) == pytest.approx(cost, rel=1e-6)


def test_joint_row_update_is_the_exact_multi_weight_obs_solution():
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(6, 10, generator=gen, dtype=torch.float64)
    h = _spd(10, gen)
    h_inv = torch.linalg.inv(h)
    mask = torch.zeros(6, 10, dtype=torch.bool)
    q = torch.tensor([1, 4, 7])
    mask[2, q] = True
    got = ls.remove_in_rows(w, h_inv, mask)
    # closed form, solved independently: d = -w_Q [(H^-1)_QQ]^-1 (H^-1)_Q,:
    lam = torch.linalg.solve(h_inv[q][:, q], w[2, q])
    delta = -lam @ h_inv[q]
    assert torch.allclose(got[2], w[2] + delta, atol=1e-10)
    assert (got[2, q] == 0).all() and torch.equal(got[[0, 1, 3, 4, 5]], w[[0, 1, 3, 4, 5]])
    d = got[2] - w[2]
    obs_cost = 0.5 * float(w[2, q] @ torch.linalg.solve(h_inv[q][:, q], w[2, q]))
    assert 0.5 * float(d @ h @ d) == pytest.approx(obs_cost, rel=1e-9)
    # and no other update zeroing Q costs less: random moves of the kept weights only add to it
    kept = ~mask[2]
    for _ in range(5):
        other = d + torch.randn(10, generator=gen, dtype=torch.float64) * kept * 0.1
        assert float(other @ h @ other) > float(d @ h @ d)


def test_joint_rows_of_different_set_sizes_match_brute_force_in_small_batches():
    """Every row its own set (0 to all weights): the batched, padded solves equal constrained OBS with
    F = diag(G) (x) A (rows independent), whatever the batch size."""
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(7, 9, generator=gen, dtype=torch.float64)
    a = _spd(9, gen)
    g = torch.diag(torch.rand(7, generator=gen, dtype=torch.float64) + 0.5)
    mask = torch.zeros(7, 9, dtype=torch.bool)
    for row, k in enumerate([3, 0, 5, 1, 9, 3, 7]):
        mask[row, torch.randperm(9, generator=gen)[:k]] = True
    _cost, expected = _brute_force(w, g, a, mask)
    a_inv = torch.linalg.inv(a)
    for batch_numel in (1, 30, 1 << 22):  # one row a batch, a few, all
        got = ls.remove_in_rows(w, a_inv, mask, batch_numel=batch_numel)
        assert torch.allclose(got, expected, atol=1e-9)
        assert (got[mask] == 0).all() and (got[4] == 0).all() and torch.equal(got[1], w[1])
    assert torch.equal(ls.remove_in_rows(w, None, mask), w.masked_fill(mask, 0.0))  # identity: zeroing only


def test_joint_update_over_everything_removed_so_far_composes_across_shots():
    """With one curvature, removing m1 and then m1 | m2 (earlier zeros among the constraints) lands on the
    one-step joint removal of m1 | m2; solving only the new set m2 (correlate="shot") does not."""
    gen = torch.Generator().manual_seed(4)
    w = torch.randn(5, 12, generator=gen, dtype=torch.float64)
    h_inv = torch.linalg.inv(_spd(12, gen))
    m1 = torch.rand(5, 12, generator=gen) < 0.3
    m2 = (torch.rand(5, 12, generator=gen) < 0.3) & ~m1
    once = ls.remove_in_rows(w, h_inv, m1 | m2)
    first = ls.remove_in_rows(w, h_inv, m1)
    assert torch.allclose(ls.remove_in_rows(first, h_inv, m1 | m2), once, atol=1e-10)
    shot_only = ls.remove_in_rows(first, h_inv, m2).masked_fill(m1, 0.0)
    assert not torch.allclose(shot_only, once, atol=1e-3)


def test_joint_update_beats_summed_single_updates_on_the_layer_output():
    gen = torch.Generator().manual_seed(3)
    n_in, n_out, tokens = 24, 16, 400
    mix = torch.randn(n_in, n_in, generator=gen, dtype=torch.float64)
    x = torch.randn(tokens, n_in, generator=gen, dtype=torch.float64) @ mix  # correlated inputs
    w = torch.randn(n_out, n_in, generator=gen, dtype=torch.float64)
    h = x.T @ x / tokens + 1e-3 * torch.eye(n_in, dtype=torch.float64)
    h_inv = torch.linalg.inv(h)
    mask = torch.rand(n_out, n_in, generator=gen) < 0.5
    joint = ls.remove_in_rows(w, h_inv, mask)
    # the old update: each removed weight as if removed alone, summed, then the set re-zeroed
    scaled = (w * mask) / torch.diagonal(h_inv)
    summed = (w - scaled @ h_inv).masked_fill(mask, 0.0)

    def err(new: torch.Tensor) -> float:
        return float((x @ (new - w).T).square().sum())

    assert (joint[mask] == 0).all()
    assert err(joint) < 0.5 * err(summed)
    assert err(joint) < 0.5 * err(w.masked_fill(mask, 0.0))  # and than no update at all


def test_rows_then_columns_keep_earlier_removals_zero(problem):
    w, _g, _a, g_inv, a_inv = problem
    out = ls.remove_cols(
        ls.remove_rows(w, g_inv[:, [0, 5]], torch.tensor([0, 5])), a_inv[:, [2]], torch.tensor([2])
    )
    assert (out[[0, 5]] == 0).all() and (out[:, 2] == 0).all()


def test_damped_inverse_diagonal_and_columns(problem):
    _w, g, _a, _g_inv, _a_inv = problem
    inv = ls.DampedInverse(g, 0.01)
    damped = g.float() + 0.01 * torch.diagonal(g).mean().float() * torch.eye(6)
    full = torch.linalg.inv(damped)
    assert torch.allclose(inv.diag(), torch.diagonal(full), atol=1e-4)
    assert torch.allclose(inv.columns(torch.tensor([4, 1])), full[:, [4, 1]], atol=1e-4)


def test_select_structures_counts_overlaps_and_hits_the_target():
    costs = [
        (torch.tensor([0.1, 5.0, 0.3]), torch.tensor([0.2, 9.0])),
        (torch.tensor([4.0]), torch.tensor([0.05, 8.0])),
    ]
    shapes = [(3, 2), (1, 2)]
    new = ls.select_structures(costs, shapes, [(set(), set()), (set(), set())], target=4)
    # order: L1 col0 (1 zero), L0 row0 (2), L0 col0 (3 rows - 1 already = 2) -> 5 >= 4
    assert new == [({0}, {0}), (set(), {0})]


def test_kfac_factors_shapes_and_symmetry(calib_ids):
    model = random_llama(seed=0)
    factors = ls.kfac_factors(model, calib_ids[:2, :32])
    f = factors["layers.0.mlp.gate_proj"]
    assert f.a.shape == (64, 64) and f.g.shape == (128, 128)
    assert torch.allclose(f.g, f.g.T, atol=1e-6) and float(torch.diagonal(f.g).min()) >= 0
    assert factors["layers.0.self_attn.q_proj"].a is factors["layers.0.self_attn.k_proj"].a  # shared input
    assert all(p.grad is None for p in model.parameters())


def test_kfac_input_factor_is_the_mean_over_every_calibration_token(calib_ids):
    model = random_llama(seed=0)
    seen = []
    lin = dict(iter_decoder_linears(model))["layers.1.mlp.down_proj"]
    handle = lin.register_forward_hook(lambda _m, args, _o: seen.append(args[0].detach().reshape(-1, 128)))
    with torch.no_grad():
        model(input_ids=calib_ids, use_cache=False)  # all 8 x 64 tokens in one batch
    handle.remove()
    x = torch.cat(seen)
    assert x.shape[0] == calib_ids.numel()
    a = ls.kfac_factors(model, calib_ids)["layers.1.mlp.down_proj"].a
    assert torch.allclose(a, x.T @ x / x.shape[0], rtol=1e-4, atol=1e-6)


def test_defaults_are_five_shots_on_the_whole_calibration_set(calib_ids, monkeypatch):
    seen = []
    real = ls.kfac_factors

    def spy(model, ids):
        seen.append(tuple(ids.shape))
        return real(model, ids)

    monkeypatch.setattr(ls, "kfac_factors", spy)
    config = ls.Config(sparsity=0.3)
    assert config.shots == 5 and config.structure == "element"
    ls.prune(random_llama(seed=0, layers=1), calib_ids, config, Context())
    assert seen == [tuple(calib_ids.shape)] * 5


@pytest.mark.parametrize("structure", ["element", "rows-columns"])
def test_model_budget_and_pruned_stay_zero(calib_ids, structure):
    model = random_llama(seed=0, layers=2)
    s = 0.5 if structure == "element" else 0.2
    outcome = ls.prune(model, calib_ids, ls.Config(sparsity=s, structure=structure, shots=2), Context())
    facts = model_facts(model)
    if structure == "element":
        assert facts.zeros == count_to_prune(facts.weights, s)
    else:
        assert count_to_prune(facts.weights, s) <= facts.zeros < count_to_prune(facts.weights, s) + 128
        zero_rows = sum(int((lin.weight == 0).all(1).sum()) for _n, lin in iter_decoder_linears(model))
        zero_cols = sum(int((lin.weight == 0).all(0).sum()) for _n, lin in iter_decoder_linears(model))
        assert (
            zero_rows >= outcome.details["rows_removed"] and zero_cols >= outcome.details["columns_removed"]
        )
        assert outcome.details["rows_removed"] + outcome.details["columns_removed"] > 0
    assert len(set(outcome.details["layer_sparsity"])) > 1  # global threshold: layers differ


def test_shots_are_nested_and_no_update_only_zeroes(calib_ids):
    dense = random_llama(seed=0, layers=2)
    model = random_llama(seed=0, layers=2)
    ls.prune(model, calib_ids, ls.Config(sparsity=0.3, update="none", shots=1), Context())
    for (_n, lin), (_m, d) in zip(iter_decoder_linears(model), iter_decoder_linears(dense), strict=True):
        kept = lin.weight != 0
        assert torch.equal(lin.weight[kept], d.weight[kept])
    updated = random_llama(seed=0, layers=2)
    ls.prune(updated, calib_ids, ls.Config(sparsity=0.3, shots=1), Context())
    assert any(not torch.equal(a.weight[a.weight != 0], d.weight[a.weight != 0])
               for (_n, a), (_m, d) in zip(iter_decoder_linears(updated), iter_decoder_linears(dense), strict=True))  # fmt: skip


def test_correlate_shot_differs_from_all_only_once_there_are_earlier_zeros(calib_ids):
    def pruned(shots: int, correlate: str) -> list[torch.Tensor]:
        model = random_llama(seed=0, layers=1)
        config = ls.Config(sparsity=0.4, shots=shots, correlate=correlate)
        ls.prune(model, calib_ids[:2], config, Context())
        assert model_facts(model).zeros == count_to_prune(model_facts(model).weights, 0.4)
        return [lin.weight.clone() for _n, lin in iter_decoder_linears(model)]

    one_all, one_shot = pruned(1, "all"), pruned(1, "shot")
    assert all(torch.equal(a, b) for a, b in zip(one_all, one_shot, strict=True))  # nothing removed before
    two_all, two_shot = pruned(2, "all"), pruned(2, "shot")
    assert not all(torch.equal(a, b) for a, b in zip(two_all, two_shot, strict=True))
