"""AlphaPruning: the Hill estimator of the ESD tail, the alpha -> sparsity mapping, and the ratios applied exactly."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reference_impls import alphapruning, wanda
from reference_impls.harness.contract import Context
from reference_impls.harness.models import random_llama
from reference_impls.primitives import masks


def _hill_loop(e: torch.Tensor) -> float:
    """Oracle: the xmin_peak search written as a plain loop over ascending eigenvalues `e` (float64)."""
    n_all, logs, log10 = e.numel(), e.log(), e.log10()
    lo10, hi10 = float(log10.min()), float(log10.max())
    peak = 10 ** float(torch.linspace(lo10, hi10, 101)[torch.histc(log10, 100, lo10, hi10).argmax()])
    low, high = math.log10(0.95 * peak), 1.5 * peak
    alphas, dists = [0.0] * (n_all - 1), [1.0] * (n_all - 1)
    for i in range(n_all - 1):
        x = float(e[i])
        if x < low:
            continue
        if x > high:
            break
        n = n_all - i
        alphas[i] = a = 1 + n / (float(logs[i:].sum()) - n * float(logs[i]))
        if a > 1:
            seq = torch.arange(n, dtype=torch.float64)
            dists[i] = float((1 - (e[i:] / x) ** (1 - a) - seq / n).abs().max())
    return alphas[min(range(n_all - 1), key=lambda i: (dists[i], i))]


@pytest.mark.parametrize("scale", [1.0, 300.0])  # 300: the peak is above 1.05, so the window has a lower end
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_hill_matches_the_loop_oracle(seed, scale):
    torch.manual_seed(seed)
    w = torch.distributions.StudentT(3.0).sample((96, 160)) if seed == 2 else torch.randn(96, 160)
    eigs = alphapruning.esd(w * 0.05) * scale
    assert alphapruning.hill_alpha(eigs) == pytest.approx(_hill_loop(eigs), rel=1e-9)


def test_the_xmin_window_is_upstreams():
    gen = torch.Generator().manual_seed(0)
    spread = 10 * torch.rand(300, generator=gen, dtype=torch.float64) ** -0.5  # a tail from 10 up
    cluster = torch.full((400,), 100.0, dtype=torch.float64)  # the fullest bin of log10 values
    low, high = alphapruning.xmin_window(torch.cat([spread, cluster]).sort().values)
    assert 10**1.97 < high / 1.5 <= 100.0  # the peak: the left edge of the bin holding 100
    assert low == pytest.approx(math.log10(0.95 * high / 1.5))  # a log10 value, as upstream computes it


def test_hill_recovers_a_known_power_law():
    # eigenvalues x with P(X > x) = x^-(alpha-1) above 1 (density ~ x^-alpha): alpha = 3
    gen = torch.Generator().manual_seed(0)
    u = torch.rand(4000, generator=gen, dtype=torch.float64)
    eigs = (u ** (-1 / 2.0)).sort().values
    assert alphapruning.hill_alpha(eigs, "median") == pytest.approx(3.0, abs=0.1)
    assert alphapruning.hill_alpha(eigs, "peak") == pytest.approx(3.0, abs=0.1)


def test_heavier_tailed_weights_get_a_smaller_alpha():
    torch.manual_seed(0)
    gaussian = torch.randn(128, 256)
    heavy = torch.distributions.StudentT(1.5).sample((128, 256))
    assert alphapruning.hill_alpha(alphapruning.esd(heavy)) < alphapruning.hill_alpha(
        alphapruning.esd(gaussian)
    )


@settings(max_examples=60, deadline=None)
@given(alphas=st.lists(st.floats(1.5, 12, allow_nan=False), min_size=2, max_size=40),
       sparsity=st.floats(0.1, 0.75), eps=st.floats(0, 0.3))  # fmt: skip
def test_mapping_keeps_the_mean_and_the_factor_range(alphas, sparsity, eps):
    s = alphapruning.layer_sparsities(alphas, sparsity, eps)
    assert sum(s) / len(s) == pytest.approx(sparsity, abs=1e-9)
    if max(alphas) > min(alphas):
        assert max(s) / min(s) == pytest.approx((1 + eps) / (1 - eps), rel=1e-9)
        hi, lo = (
            max(range(len(alphas)), key=alphas.__getitem__),
            min(range(len(alphas)), key=alphas.__getitem__),
        )
        assert s[hi] == pytest.approx(max(s)) and s[lo] == pytest.approx(min(s))  # larger alpha: pruned more
        order = sorted(range(len(alphas)), key=alphas.__getitem__)
        assert all(s[a] <= s[b] + 1e-12 for a, b in itertools.pairwise(order))
    else:
        assert s == [sparsity] * len(alphas)


def test_ratios_follow_the_mean_block_alpha_and_are_applied(calib_ids):
    model = random_llama(seed=0, layers=4)
    per_linear = alphapruning.layer_alphas(model, "peak")
    block = [sum(a) / len(a) for a in per_linear]
    outcome = alphapruning.prune(model, calib_ids, alphapruning.Config(sparsity=0.6), Context())
    s = outcome.layer_sparsity
    assert s is not None and len(s) == 4 and sum(s) / 4 == pytest.approx(0.6)
    assert outcome.details["layer_alpha"] == [round(a, 4) for a in block] and len(set(block)) > 1
    assert max(range(4), key=s.__getitem__) == max(range(4), key=block.__getitem__)
    assert max(s) / min(s) == pytest.approx(1.3 / 0.7)
    # Wanda: each row of each linear pruned to its layer's ratio
    for i, layer in enumerate(model.model.layers):
        for lin in (layer.self_attn.k_proj, layer.mlp.down_proj):
            assert ((lin.weight == 0).sum(1) == masks.count_to_prune(lin.weight.shape[1], s[i])).all()


def test_zero_epsilon_is_uniform_wanda(calib_ids):
    a, b = random_llama(seed=0, layers=3), random_llama(seed=0, layers=3)
    alphapruning.prune(a, calib_ids, alphapruning.Config(sparsity=0.7, epsilon=0.0), Context())
    wanda.prune(b, calib_ids, wanda.Config(sparsity=0.7), Context())
    assert all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_magnitude_base_counts_per_matrix(calib_ids):
    model = random_llama(seed=0, layers=3)
    outcome = alphapruning.prune(
        model, calib_ids, alphapruning.Config(sparsity=0.5, base="magnitude"), Context()
    )
    for i, layer in enumerate(model.model.layers):
        w = layer.mlp.gate_proj.weight
        assert int((w == 0).sum()) == masks.count_to_prune(w.numel(), outcome.layer_sparsity[i])


def test_a_high_target_clips_and_keeps_the_mean(calib_ids):
    model = random_llama(seed=0, layers=4)
    logged: list[str] = []
    cfg = alphapruning.Config(sparsity=0.9, epsilon=0.3, base="magnitude")
    s = alphapruning.prune(model, calib_ids, cfg, Context(log=logged.append)).layer_sparsity
    assert s is not None and max(s) == alphapruning.MAX_LAYER_SPARSITY and sum(s) / 4 == pytest.approx(0.9)
    assert any("clipped" in line for line in logged)


def test_a_matrix_without_a_tail_is_left_out_of_its_layer():
    model = random_llama(seed=0, layers=2)
    model.model.layers[1].mlp.up_proj = torch.nn.Linear(64, 1, bias=False)  # one singular value: no tail
    counts = [len(a) for a in alphapruning.layer_alphas(model, "peak")]
    assert counts == [7, 6]
