"""DSnoT: swaps keep every row's count of zeros, change no weight value, shrink the expected error, and
make the same swaps as a plain re-statement of the official loop, at the official (per-sequence) scale."""

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


def official_row(w, x_sum, var, wanda_score, pruned, *, threshold=0.1, max_cycles=50, pow_of_var=1.0):
    """One row of upstream's unstructured loop (`lib/prune.py::prune_DSnoT`, default: no sign test), in
    plain Python. Lists: every column ascending by W_j s_j / Var_j (kept columns count as 0), walked from
    the top while the error is positive and from the bottom otherwise; the kept columns by ascending Wanda
    score, those with negative contribution first and then those with positive contribution in reverse,
    walked from the front while the error is positive (not negative) and from the back otherwise."""
    n = len(w)
    metric = [w[j] * x_sum[j] for j in range(n)]
    error = sum(metric[j] for j in range(n) if pruned[j])
    grow_key = [metric[j] / var[j] ** pow_of_var if pruned[j] else 0.0 for j in range(n)]
    grow = sorted(range(n), key=lambda j: grow_key[j])
    kept = sorted((j for j in range(n) if not pruned[j]), key=lambda j: wanda_score[j])
    cut = [j for j in kept if metric[j] < 0] + [j for j in reversed(kept) if metric[j] > 0]
    g_lo, g_hi, c_lo, c_hi = 0, n - 1, 0, len(cut) - 1
    mask = list(pruned)
    for _ in range(max_cycles):
        if abs(error) <= threshold:
            break
        if error > 0:
            g, c = grow[g_hi], cut[c_lo]
            g_hi, c_lo = g_hi - 1, c_lo + 1
        else:
            g, c = grow[g_lo], cut[c_hi]
            g_lo, c_hi = g_lo + 1, c_hi - 1
        # the test stays where the pointers never run out of candidates of the needed sign (Differs (2))
        assert pruned[g] and not pruned[c] and metric[g] * error > 0 and metric[c] * error < 0
        mask[g], mask[c] = False, True
        error += metric[c] - metric[g]
    return mask


def _random_layer(seed: int = 0):
    """A 12 x 256 linear with LLM-sized weights and a calibration batch of 4 sequences x 64 tokens."""
    gen = torch.Generator().manual_seed(seed)
    w = 0.02 * torch.randn(12, 256, generator=gen)
    x = torch.randn(4, 64, 256, generator=gen) + torch.linspace(-0.5, 1.0, 256)
    stats = InputStats.empty(256, "moments", torch.device("cpu"))
    stats.add(x)  # as the harness does
    return w, x, stats


def test_the_error_is_per_sequence_and_the_swaps_match_the_official_loop():
    w, x, stats = _random_layer()
    x_sum = dsnot.per_sequence_sum(stats, sequences=4)
    mean, var = stats.mean_var()
    assert torch.allclose(x_sum, x.sum((0, 1)) / 4, atol=1e-4)  # upstream `sum_metric_row`
    assert torch.allclose(x_sum, 64 * mean, atol=1e-4)  # = E[x] * seqlen
    mask = row_mask(wanda.wanda_scores(w.clone(), stats.sq_norm), 0.6)
    new, cycles = dsnot.dsnot_refine(w, mask, x_sum, var, stats.sq_norm)
    assert cycles > 0
    # independent statistics from the raw batch (the variance over all tokens: Differs (1))
    ref_sum = (x.sum((0, 1)) / 4).tolist()
    ref_var = x.reshape(-1, 256).var(0, unbiased=False).tolist()
    ref_score = (w.abs() * x.square().sum((0, 1)).sqrt()).tolist()
    swapped = 0
    for i in range(w.shape[0]):
        ref = official_row(w[i].tolist(), ref_sum, ref_var, ref_score[i], mask[i].tolist())
        assert new[i].tolist() == ref, f"row {i}"
        swapped += sum(a and not b for a, b in zip(ref, mask[i].tolist(), strict=True))
    assert swapped == int((new & ~mask).sum()) > 12  # every row swaps at this scale
    # at the per-token scale (the old error, 64x smaller) the 0.1 threshold would stop most rows at once
    assert (dsnot.reconstruction_error(w, mask, mean).abs() > 0.1).sum() < w.shape[0] // 2
    assert (dsnot.reconstruction_error(w, mask, x_sum).abs() > 0.1).all()


def test_swaps_keep_row_counts_and_reduce_the_expected_error():
    w, mask, mean, var, sq = _setup()
    e0 = dsnot.reconstruction_error(w, mask, mean)
    refined = {}
    for same_sign in (False, True):
        new, cycles = dsnot.dsnot_refine(w, mask, mean, var, sq, threshold=0.1, same_sign=same_sign)
        assert cycles > 0 and bool((new != mask).any())
        assert torch.equal(new.sum(1), mask.sum(1))
        e1 = dsnot.reconstruction_error(w, new, mean)
        assert e1.abs().mean() < e0.abs().mean()
        changed = (new != mask).any(1)
        assert (e0[changed].abs() > 0.1).all()  # rows already within the threshold are left alone
        refined[same_sign] = new
    # with the sign test an accepted swap never flips the sign, so |e| only shrinks
    e_signed = dsnot.reconstruction_error(w, refined[True], mean)
    assert (e_signed.abs() <= e0.abs() + 1e-5).all()
    assert torch.equal(torch.sign(e_signed), torch.sign(e0))
    # both follow the same swaps until the first one that flips the sign, where the sign test stops the
    # row and upstream's default goes on: the sign-tested swaps are a subset, strictly smaller somewhere
    grown = {k: mask & ~m for k, m in refined.items()}
    assert torch.equal(grown[True] & grown[False], grown[True])
    assert int(grown[True].sum()) < int(grown[False].sum())


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
    assert torch.allclose(dsnot.per_sequence_sum(st, 3), x.sum((0, 1)) / 3, atol=1e-4)


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


def test_default_threshold_swaps_on_a_model_and_the_sign_test_swaps_less(calib_ids):
    plain = dsnot.prune(random_llama(seed=0), calib_ids, dsnot.Config(sparsity=0.6), Context())
    signed = dsnot.prune(
        random_llama(seed=0), calib_ids, dsnot.Config(sparsity=0.6, same_sign=True), Context()
    )
    assert 0 < signed.details["swaps"] < plain.details["swaps"]
