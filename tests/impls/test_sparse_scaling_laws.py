"""Sparse scaling laws stand-in: the law, the fitter, the optimal sparsity, gradual magnitude pruning, the sweep."""

from __future__ import annotations

import itertools

import pytest
import torch

from kb.errors import KBError
from kb.results import Outcome
from reference_impls import registry
from reference_impls import sparse_scaling_laws as ssl
from reference_impls.harness.contract import Context
from reference_impls.harness.scratch import Shape, tiny_llama

# The paper's notebook fit for ViT (N in millions of non-zeros, D in billions of images), used as a known law.
VIT = {"a": 1.3049, "b": 0.8210, "c": 2.0751, "d": 0.3922, "e": 0.2782, "f": 0.8898, "g": 4.5167}
TINY = ssl.Config(sparsities=(0.0, 0.5), shapes=((16, 32), (24, 40)), steps=(4, 8), batch_size=2, seqlen=16,
                  fit_starts=2)  # fmt: skip


def _grid() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    s, n, d = torch.meshgrid(torch.tensor([0.0, 0.5, 0.75, 0.875]), torch.tensor([1.0, 4.0, 16.0, 64.0]),
                             torch.tensor([0.5, 1.0, 2.0, 4.0]), indexing="ij")  # fmt: skip
    return s.flatten().double(), n.flatten().double(), d.flatten().double()


def test_fit_recovers_a_known_law_on_held_out_points():
    s, n, d = _grid()
    noise = 1e-4 * torch.randn(s.numel(), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    loss = ssl.law(s, n, d, VIT) + noise
    held = torch.arange(s.numel()) % 5 == 0
    theta, _obj = ssl.fit_law(
        s[~held].tolist(), n[~held].tolist(), d[~held].tolist(), loss[~held].tolist(), starts=5
    )
    pred = ssl.law(s[held], n[held], d[held], theta)
    assert ((pred - ssl.law(s[held], n[held], d[held], VIT)).abs() / pred).max() < 1e-3


def test_frozen_parameters_stay_fixed_and_bad_input_is_refused():
    s, n, d = _grid()
    loss = ssl.law(s, n, d, VIT)
    theta, _ = ssl.fit_law(
        s.tolist(), n.tolist(), d.tolist(), loss.tolist(), fixed={"d": 0.3922}, starts=2, delta=1e-3
    )
    assert theta["d"] == 0.3922
    with pytest.raises(KBError, match="unknown law parameters"):
        ssl.fit_law([0, 0.5, 0.75], [1, 1, 1], [1, 2, 3], [3, 2, 1], fixed={"z": 1.0})
    with pytest.raises(KBError, match="positive"):
        ssl.fit_law([0, 0.5, 0.75], [1, 1, 1], [1, 2, 3], [3, 0, 1])


def test_law_falls_with_sparsity_at_fixed_non_zeros_and_optimal_sparsity_grows_with_compute():
    s = torch.linspace(0, 0.9, 10, dtype=torch.float64)
    loss = ssl.law(s, torch.full_like(s, 10.0), torch.full_like(s, 1.0), VIT)
    assert (loss[1:] < loss[:-1]).all()
    budgets = [10.0**k for k in range(-2, 5)]
    s_opt = [ssl.optimal_sparsity(VIT, 10.0, c) for c in budgets]
    assert all(b >= a for a, b in itertools.pairwise(s_opt)) and s_opt[-1] > s_opt[0]
    assert ssl.tokens_for_budget(60.0, 10.0, torch.tensor(0.5)) == pytest.approx(0.5)  # C = 6 N D / (1 - S)


def test_gmp_schedule_ramps_cubically_between_its_bounds():
    values = [ssl.gmp_sparsity(t, 100, 0.75, 0.25, 0.75) for t in range(101)]
    assert values[:26] == [0.0] * 26 and values[75:] == [0.75] * 26
    assert all(b >= a for a, b in itertools.pairwise(values))
    assert values[50] == pytest.approx(0.75 * (1 - 0.5**3))


def test_gradual_pruner_reaches_exactly_the_final_sparsity_per_matrix():
    model = tiny_llama(Shape(hidden=16, intermediate=32), seed=0)
    pruner = ssl.GradualPruner(model, 0.75, total=20, start=0.25, end=0.75, every=3)
    with torch.no_grad():
        for step in range(20):
            for lin in pruner.linears:
                lin.weight.add_(0.01)  # an optimiser step would regrow pruned weights; the mask re-zeros them
            pruner(step, model)
    for lin in ssl.decoder_linears(model):
        assert int((lin.weight == 0).sum()) == int(0.75 * lin.weight.numel())


def test_default_shapes_hold_the_non_zero_count_equal():
    config = ssl.Config()
    counts = []
    for sparsity, (hidden, inter) in zip(config.sparsities, config.shapes, strict=True):
        model = tiny_llama(Shape(hidden=hidden, intermediate=inter, layers=config.layers), seed=0)
        counts.append(sum(int(lin.weight.numel() * (1 - sparsity)) for lin in ssl.decoder_linears(model)))
    assert max(counts) / min(counts) < 1.02


def test_sweep_reports_every_point_a_fit_and_leaves_the_model_alone(random_model):
    state = {k: v.clone() for k, v in random_model.state_dict().items()}
    d = ssl.prune(random_model, None, TINY, Context()).details
    assert all(torch.equal(state[k], v) for k, v in random_model.state_dict().items())
    assert [(p["sparsity"], p["steps"]) for p in d["points"]] == [(0.0, 4), (0.0, 8), (0.5, 4), (0.5, 8)]
    sparse = [p for p in d["points"] if p["sparsity"] == 0.5]
    assert all(p["nonzeros"] == pytest.approx(0.5 * p["dense_params"], abs=8) for p in sparse)
    assert (
        d["frozen"] == ["d", "g"]
        and d["theta"]["d"] == 0.0
        and len(d["optimal_sparsity"]) == len(d["budgets"])
    )
    assert set(d["fit_curves"]) == {"0.0", "0.5"}


def test_claim_reads_fit_and_measurements():
    spec = registry.PAPERS["sparse-scaling-laws"]
    points = [{"sparsity": s, "steps": t, "tokens": t * 1024, "eval_loss": loss}
              for s, t, loss in [(0.0, 100, 3.0), (0.0, 200, 2.6), (0.75, 100, 3.1), (0.75, 200, 2.5)]]  # fmt: skip
    good = {
        "points": points,
        "budgets": [1.0, 10.0],
        "optimal_sparsity": [0.3, 0.6],
        "fit_rmse_log_loss": 0.01,
    }

    def verdict(details: dict) -> bool:
        return spec.check(registry.Results({}, {"sweep": Outcome(kind="training", details=details)})).holds

    assert verdict(good)
    assert not verdict({**good, "optimal_sparsity": [0.3, 0.35]})  # grows by less than 0.1
    assert not verdict({**good, "fit_rmse_log_loss": 0.05})  # the law does not describe the sweep
    worse = [dict(p, eval_loss=2.7) if p["sparsity"] == 0.75 and p["steps"] == 200 else p for p in points]
    assert not verdict({**good, "points": worse})  # the sparse model loses at the longest training
