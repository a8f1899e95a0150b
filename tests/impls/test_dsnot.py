"""DSnoT: swaps keep every row's count of zeros, change no weight value, and shrink the expected error."""

from __future__ import annotations

import torch

from reference_impls import dsnot, wanda
from reference_impls.harness.contract import Context
from reference_impls.harness.layerwise import InputStats, iter_decoder_linears
from reference_impls.harness.models import random_llama
from reference_impls.primitives.masks import row_mask


def _setup(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(32, 64, generator=gen)
    x = torch.randn(500, 64, generator=gen) + torch.linspace(-1, 2, 64)
    mean, var, sq = x.mean(0), x.var(0, unbiased=False), x.square().sum(0)
    mask = row_mask(wanda.wanda_scores(w.clone(), sq), 0.6)
    return w, mask, mean, var, sq


def test_swaps_keep_row_counts_and_reduce_the_expected_error():
    w, mask, mean, var, sq = _setup()
    new, cycles = dsnot.dsnot_refine(w, mask, mean, var, sq, threshold=0.1)
    assert cycles > 0 and bool((new != mask).any())
    assert torch.equal(new.sum(1), mask.sum(1))
    before = dsnot.reconstruction_error(w, mask, mean).abs()
    after = dsnot.reconstruction_error(w, new, mean).abs()
    assert after.mean() < before.mean()
    assert (after <= before + 1e-5).all()  # an accepted swap never flips the sign, so |e| only shrinks
    changed = (new != mask).any(1)
    assert (before[changed] > 0.1).all()  # rows already within the threshold are left alone


def test_zero_cycles_and_high_threshold_leave_the_mask():
    w, mask, mean, var, sq = _setup(1)
    assert torch.equal(dsnot.dsnot_refine(w, mask, mean, var, sq, max_cycles=0)[0], mask)
    assert torch.equal(dsnot.dsnot_refine(w, mask, mean, var, sq, threshold=1e9)[0], mask)


def test_error_tracked_incrementally_equals_recomputation():
    w, mask, mean, var, sq = _setup(2)
    for cycles in (1, 3, 10):
        new, _ = dsnot.dsnot_refine(w, mask, mean, var, sq, max_cycles=cycles, threshold=0.0)
        direct = (w * mean).masked_fill(~new, 0).sum(1)
        assert torch.allclose(dsnot.reconstruction_error(w, new, mean), direct, atol=1e-5)
        assert torch.equal(new.sum(1), mask.sum(1))


def test_moments_statistics():
    x = torch.randn(3, 50, 8) * 2 + 1
    st = InputStats.empty(8, "moments", torch.device("cpu"))
    st.add(x[:2])
    st.add(x[2:])
    mean, var = st.mean_var()
    flat = x.reshape(-1, 8)
    assert torch.allclose(mean, flat.mean(0), atol=1e-5)
    assert torch.allclose(var, flat.var(0, unbiased=False), atol=1e-4)


def test_model_keeps_wanda_counts_and_weight_values(calib_ids):
    dense = random_llama(seed=0)
    base = random_llama(seed=0)
    wanda.prune(base, calib_ids, wanda.Config(sparsity=0.6), Context())
    model = random_llama(seed=0)
    outcome = dsnot.prune(model, calib_ids, dsnot.Config(sparsity=0.6, threshold=0.0, skip="none"), Context())
    assert outcome.details["swaps"] > 0
    for (name, lin), (_n, w0), (_m, d) in zip(iter_decoder_linears(model), iter_decoder_linears(base),
                                              iter_decoder_linears(dense), strict=True):  # fmt: skip
        assert torch.equal((lin.weight == 0).sum(1), (w0.weight == 0).sum(1)), name
        kept = lin.weight != 0
        assert torch.equal(lin.weight[kept], d.weight[kept])  # no value changed
    default = random_llama(seed=0)  # official default: MLP linears keep their Wanda mask (fewer swaps)
    skipped = dsnot.prune(default, calib_ids, dsnot.Config(sparsity=0.6, threshold=0.0), Context())
    assert 0 < skipped.details["swaps"] < outcome.details["swaps"]
    assert dsnot.skipped("layers.3.mlp.up_proj", dsnot.Config()) and not dsnot.skipped(
        "layers.3.self_attn.q_proj", dsnot.Config()
    )
    assert not dsnot.skipped("layers.3.mlp.up_proj", dsnot.Config(skip="none"))
