"""OATS: the parameter budget (nonzeros plus low-rank factors), the alternating fit, outlier-aware scaling, and
the merged model's outcome and saved copy."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from savedmodels import SMALL, fresh_process, greedy

from reference_impls import oats, wanda
from reference_impls.harness import layerwise
from reference_impls.harness.contract import Context
from reference_impls.primitives import masks


def _problem(out=48, cols=96, tokens=600, seed=0):
    """A weight with a low-rank part plus noise, and inputs with a few outlier features (as in LLMs)."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(out, cols, generator=gen)
    w += 0.5 * torch.randn(out, 4, generator=gen) @ torch.randn(4, cols, generator=gen)
    x = torch.randn(tokens, cols, generator=gen)
    x[:, :4] *= 20
    return w, x


@pytest.mark.parametrize("shape", [(576, 576), (192, 576), (1536, 576), (576, 1536), (48, 96)])
@pytest.mark.parametrize("compression", [0.3, 0.5, 0.6])
def test_budget_counts_both_terms_and_meets_the_compression(shape, compression):
    rows, cols = shape
    cfg = oats.Config(compression=compression, rank_ratio=0.3)
    rank, pruned = oats.budget(rows, cols, cfg)
    kept = rows * (cols - pruned) + rank * (rows + cols)
    target = (1 - compression) * rows * cols
    assert rank == math.floor(0.3 * (1 - compression) * rows * cols / (rows + cols) + 1e-9)
    assert pruned == masks.count_to_prune(cols, 1 - 0.7 * (1 - compression))
    assert abs(kept - target) <= rows + cols  # one rank or one weight per row at most, from rounding down


def test_budget_at_half_compression_keeps_wandas_count_on_tiny_llama_shapes():
    cfg = oats.Config(compression=0.5)  # rank ratio 0.25: upstream's default
    assert oats.budget(576, 576, cfg) == (36, 360)  # 216 nonzeros per row + 36 x 1152 = half of 576 x 576
    for rows, cols in [(576, 576), (192, 576), (1536, 576), (576, 1536)]:
        rank, pruned = oats.budget(rows, cols, cfg)
        wanda_kept = rows * (cols - masks.count_to_prune(cols, 0.5))
        assert rows * (cols - pruned) + rank * (rows + cols) <= wanda_kept


def test_the_fit_is_row_sparse_plus_low_rank():
    w, x = _problem()
    cfg = oats.Config(iterations=5)
    rank, pruned = oats.budget(*w.shape, cfg)
    sparse, low = oats.alternating_thresholding(w * x.square().sum(0).sqrt(), rank, pruned, cfg)
    assert ((sparse != 0).sum(1) == w.shape[1] - pruned).all()
    assert rank > 0 and int(torch.linalg.matrix_rank(low)) == rank


def test_alternating_rounds_never_increase_the_error():
    """Each half-step is an exact minimisation (truncated SVD, per-row hard threshold), so the fit improves."""
    w, x = _problem(seed=1)
    scaled = w * x.square().sum(0).sqrt()
    rank, pruned = oats.budget(*w.shape, oats.Config())
    errors = []
    for rounds in range(1, 7):
        sparse, low = oats.alternating_thresholding(scaled, rank, pruned, oats.Config(iterations=rounds))
        errors.append(float((scaled - sparse - low).norm()))
    assert all(b <= a * (1 + 1e-5) for a, b in itertools.pairwise(errors))
    assert errors[-1] < 0.99 * errors[0]


@pytest.mark.parametrize("seed", [0, 1])
def test_subspace_solver_tracks_the_exact_svd(seed):
    w, x = _problem(seed=seed)
    scaled = w * x.square().sum(0).sqrt()
    rank, pruned = oats.budget(*w.shape, oats.Config())
    fits = {}
    for solver in ("svd", "subspace"):
        cfg = oats.Config(iterations=20, solver=solver)
        sparse, low = oats.alternating_thresholding(scaled, rank, pruned, cfg)
        fits[solver] = float((scaled - sparse - low).norm())
    assert fits["subspace"] <= 1.01 * fits["svd"]


def test_rank_ratio_zero_is_wanda():
    """Without a low-rank term one hard threshold of W D is Wanda's per-row mask at the same sparsity."""
    w, x = _problem()
    sq = x.square().sum(0)
    new, rank, nonzeros = oats.oats_weight(w, sq, oats.Config(rank_ratio=0.0, iterations=3))
    reference = wanda.prune_weight(w, sq, wanda.Config(sparsity=0.5))
    assert rank == 0 and nonzeros == w.numel() // 2
    assert torch.equal(new == 0, reference == 0) and torch.allclose(new, reference, rtol=1e-6, atol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_outlier_scaling_and_low_rank_beat_wanda_at_equal_kept_parameters(seed):
    w, x = _problem(seed=seed)
    sq = x.square().sum(0)

    def error(new: torch.Tensor) -> float:
        return float((x @ (w - new).T).norm())

    cfg = oats.Config(iterations=30)
    fitted, rank, nonzeros = oats.oats_weight(w, sq, cfg)
    unscaled, _, _ = oats.oats_weight(w, torch.ones_like(sq), cfg)
    reference = wanda.prune_weight(w, sq, wanda.Config(sparsity=0.5))
    assert nonzeros + rank * sum(w.shape) <= int((reference != 0).sum())
    assert error(fitted) < error(reference) and error(fitted) < 0.5 * error(unscaled)


def test_sparse_pattern_sets_the_compression_and_is_exact():
    cfg = oats.Config(sparse_pattern=(6, 8), rank_ratio=0.25)  # upstream's "2:8": keep 2 of every 8
    assert cfg.compression == pytest.approx(1 - 0.25 / 0.75)
    w, x = _problem()
    scaled = w * x.square().sum(0).sqrt()
    rank, _ = oats.budget(*w.shape, cfg)
    sparse, _ = oats.alternating_thresholding(scaled, rank, 0, cfg.model_copy(update={"iterations": 3}))
    assert ((sparse == 0).reshape(w.shape[0], -1, 8).sum(-1) == 6).all()
    assert oats.Config(sparse_pattern="6:8") == cfg  # as `--set sparse_pattern=6:8` gives it
    with pytest.raises(ValueError, match="0 < n < m"):
        oats.Config(sparse_pattern=(8, 8))


def test_a_feature_never_active_keeps_the_weight_finite():
    w, x = _problem()
    sq = x.square().sum(0)
    sq[5] = 0.0
    new, _, _ = oats.oats_weight(w, sq, oats.Config(iterations=3))
    assert torch.isfinite(new).all()


def test_model_driver_reports_every_matrix_and_the_honest_size(random_model, calib_ids):
    before = {n: lin.weight.detach().clone() for n, lin in layerwise.iter_decoder_linears(random_model)}
    outcome = oats.prune(random_model, calib_ids, oats.Config(iterations=4, solver="subspace"), Context())
    details = outcome.details
    assert set(details["matrices"]) == set(before)
    for name, lin in layerwise.iter_decoder_linears(random_model):
        entry, (rows, cols) = details["matrices"][name], lin.weight.shape
        rank, pruned = oats.budget(rows, cols, oats.Config())
        assert entry["rank"] == rank and entry["nonzeros"] <= rows * (cols - pruned)
        assert entry["kept"] == entry["nonzeros"] + rank * (rows + cols) and entry["params"] == rows * cols
        assert not torch.equal(lin.weight, before[name])  # the merged fit replaced the weight
    assert details["kept_params"] == sum(m["kept"] for m in details["matrices"].values())
    assert details["kept_share"] == details["kept_params"] / details["dense_params"] <= 0.5


def test_kb_prune_saves_the_merged_model_and_it_reloads(tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from kb_cli.main import main

    save = tmp_path / "oats"
    assert main(["prune", "oats", *SMALL, "--set", "iterations=3", "--save", str(save)]) == 0
    capsys.readouterr()
    model = AutoModelForCausalLM.from_pretrained(save).eval()
    assert fresh_process(save, tmp_path)["tokens"] == greedy(model)[0].tolist()
    assert (save / "README.md").is_file()
