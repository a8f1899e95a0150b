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


def test_element_cost_and_single_element_update_match_brute_force(problem):
    w, g, a, g_inv, a_inv = problem
    costs = ls.element_costs(w, torch.diagonal(g_inv), torch.diagonal(a_inv))
    removed = torch.zeros(6, 5, dtype=torch.bool)
    removed[2, 3] = True
    cost, new = _brute_force(w, g, a, removed)
    assert float(costs[2, 3]) == pytest.approx(cost, rel=1e-6)
    assert torch.allclose(
        ls.remove_elements(
            w, lambda x: g_inv @ x, lambda x: a_inv @ x, torch.diagonal(g_inv), torch.diagonal(a_inv), removed
        ),
        new,
        atol=1e-8,
    )


def test_rows_then_columns_keep_earlier_removals_zero(problem):
    w, _g, _a, g_inv, a_inv = problem
    out = ls.remove_cols(
        ls.remove_rows(w, g_inv[:, [0, 5]], torch.tensor([0, 5])), a_inv[:, [2]], torch.tensor([2])
    )
    assert (out[[0, 5]] == 0).all() and (out[:, 2] == 0).all()


def test_damped_inverse_diagonal_products_and_columns(problem):
    _w, g, _a, _g_inv, _a_inv = problem
    inv = ls.DampedInverse(g, 0.01)
    damped = g.float() + 0.01 * torch.diagonal(g).mean().float() * torch.eye(6)
    full = torch.linalg.inv(damped)
    assert torch.allclose(inv.diag(), torch.diagonal(full), atol=1e-4)
    x = torch.randn(6, 3)
    assert torch.allclose(inv.apply(x), full @ x, atol=1e-4)
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
