"""Intervals and three-valued verdicts of claim comparisons (`registry.measured`, `claims._kit`): torch-free."""

from __future__ import annotations

import math
import random

import pytest

from kb.results import CacheEval, Metrics, Probe, Size
from reference_impls.claims._kit import above, below, check, compare, note, verdict, vs
from reference_impls.registry.measured import interval_of, lift, mean_of, measured, replicates, sample
from reference_impls.registry.specs import Results

SIZE = Size(params_total=10, params_non_embedding=8, params_decoder=6, weight_bytes=40, decoder_sparsity=0.0,
            layers=2)  # fmt: skip


def nll_windows(mean: float, spread: float, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [mean + rng.uniform(-spread, spread) for _ in range(n)]


def ppl_leaf(draws: list[list[float]]):
    return measured(sample(draws, "exp-mean", "ppl-windows", "window"))


def test_a_leaf_is_exp_of_the_mean_nll_over_windows_and_draws() -> None:
    draws = [[1.0, 2.0], [3.0, 4.0]]
    leaf = ppl_leaf(draws)
    assert float(leaf) == pytest.approx(math.exp(2.5))
    assert not leaf.exact


def test_paired_windows_give_a_tight_interval_where_unpaired_noise_is_large() -> None:
    """Windows differ a lot (hard and easy text), arms differ little but consistently: pairing sees it."""
    base = nll_windows(3.0, 1.0, 16, seed=1)
    a = ppl_leaf([[x - 0.05 for x in base]])
    b = ppl_leaf([base])
    c = compare(a, below("b", b))
    assert c.scale == "ratio" and c.state == "holds"
    assert c.estimate == pytest.approx(math.exp(-0.05))
    assert c.low == pytest.approx(math.exp(-0.05)) and c.high == pytest.approx(
        math.exp(-0.05)
    )  # every window -0.05
    assert c.units == "16 windows"


def test_three_states() -> None:
    base = nll_windows(3.0, 0.5, 16, seed=2)
    noise = nll_windows(0.0, 0.2, 16, seed=3)
    b = ppl_leaf([base])
    better = ppl_leaf([[x - 0.3 + e for x, e in zip(base, noise, strict=True)]])
    worse = ppl_leaf([[x + 0.3 + e for x, e in zip(base, noise, strict=True)]])
    tied = ppl_leaf([[x + e for x, e in zip(base, noise, strict=True)]])
    assert compare(better, below("b", b)).state == "holds"
    assert compare(worse, below("b", b)).state == "does not hold"
    assert compare(tied, below("b", b)).state == "inconclusive"
    assert compare(worse, above("b", b)).state == "holds"
    c = compare(tied, below("b", b))
    assert c.low < 1.0 < c.high and c.low < c.estimate < c.high


def test_the_interval_is_reproducible_and_recorded_seed_matters() -> None:
    base = nll_windows(3.0, 0.5, 12, seed=4)
    noise = nll_windows(0.0, 0.2, 12, seed=5)
    a, b = ppl_leaf([[x + e for x, e in zip(base, noise, strict=True)]]), ppl_leaf([base])
    first, again = interval_of(a / b), interval_of(a / b)
    assert first == again
    other = replicates(a / b, seed=1)
    assert other is not None and list(other[:5]) != list(replicates(a / b)[:5])


def test_draws_widen_the_interval_when_they_disagree() -> None:
    base = nll_windows(3.0, 0.5, 12, seed=6)
    b1 = ppl_leaf([base])
    a1 = ppl_leaf([[x - 0.02 for x in base]])
    # three calibration draws: the same windows, the pruned arm's quality moving from draw to draw
    b3 = ppl_leaf([base, base, base])
    a3 = ppl_leaf([[x + shift for x in base] for shift in (-0.2, 0.0, 0.14)])
    one, three = compare(a1, below("b", b1)), compare(a3, below("b", b3))
    assert one.state == "holds"
    assert three.state == "inconclusive" and three.high - three.low > 0.1
    assert three.units == "12 windows x 3 draws"


def test_exact_numbers_only_hold_or_fail_and_strictness_decides_ties() -> None:
    assert compare(lift(2.0), below("b", 2.0)).state == "does not hold"
    assert compare(lift(2.0), below("b", 2.0, strict=False)).state == "holds"
    assert compare(lift(1.0), above("b", 2.0)).state == "does not hold"
    c = compare(lift(3.0), above("b", 2.0))
    assert c.state == "holds" and c.units == "" and c.low == c.high == c.estimate
    assert compare(lift(math.nan), below("b", 1.0)).state == "does not hold"


def test_accuracy_is_compared_as_a_paired_difference_of_items() -> None:
    rng = random.Random(7)
    b_hits = [1 if rng.random() < 0.5 else 0 for _ in range(500)]
    a_hits = [1 if (h or rng.random() < 0.2) else 0 for h in b_hits]  # a gets every item b gets, and more
    a = measured(sample([a_hits], "mean", "probe-items", "item"), ratio_scale=False)
    b = measured(sample([b_hits], "mean", "probe-items", "item"), ratio_scale=False)
    c = compare(a, above("b", b))
    assert c.scale == "difference" and c.state == "holds" and c.low > 0
    assert c.estimate == pytest.approx((sum(a_hits) - sum(b_hits)) / 500)


def test_expressions_keep_their_samples() -> None:
    """DSnoT's "the gain grows with sparsity": (w7 - d7) > (w6 - d6), resampled as one expression."""
    base = nll_windows(3.0, 0.3, 10, seed=8)
    w6, d6 = ppl_leaf([[x + 0.1 for x in base]]), ppl_leaf([[x + 0.08 for x in base]])
    w7, d7 = ppl_leaf([[x + 0.5 for x in base]]), ppl_leaf([[x + 0.4 for x in base]])
    gain7, gain6 = w7 - d7, w6 - d6
    assert float(gain7) == pytest.approx(float(w7) - float(d7))
    assert set(gain7.leaves) == {id(next(iter(w7.leaves.values()))), id(next(iter(d7.leaves.values())))}
    assert compare(gain7, above("gain at 60%", gain6)).state == "holds"
    half = 0.5 * w6
    assert float(half) == pytest.approx(0.5 * float(w6)) and half.ratio_scale
    mean = mean_of([w6, w7])
    assert float(mean) == pytest.approx((float(w6) + float(w7)) / 2) and not mean.exact
    assert mean.ratio_scale and not gain7.ratio_scale  # a mean of perplexities compares as a ratio
    assert compare(mean, below("w7", w7)).scale == "ratio"


def test_a_verdict_holds_only_if_every_part_holds_and_fails_if_any_fails() -> None:
    yes, no = check(True, "yes"), check(False, "no")
    base = nll_windows(3.0, 0.5, 8, seed=9)
    noise = nll_windows(0.0, 0.3, 8, seed=10)
    unsure = vs(
        "a", ppl_leaf([[x + e for x, e in zip(base, noise, strict=True)]]), below("b", ppl_leaf([base]))
    )
    assert unsure.state == "inconclusive"
    assert verdict(yes, yes).state == "holds"
    assert verdict(yes, unsure).state == "inconclusive"
    assert verdict(no, unsure).state == "does not hold"
    assert verdict(yes, note("only context")).state == "holds"
    judged = verdict(yes, unsure)
    assert "ratio" in judged.reason and "[90% paired bootstrap intervals over 8 windows]" in judged.reason


def test_results_build_leaves_from_every_draw() -> None:
    def metrics(nll: list[float], hits: list[int], cache_nll: list[float]) -> Metrics:
        probe = Probe(
            task="t", items=len(hits), choices=4, acc=0.0, acc_norm=sum(hits) / len(hits), hits_norm=hits
        )
        mean = sum(cache_nll) / len(cache_nll)
        cache = CacheEval(policy="p", windows=len(cache_nll), prompt_tokens=8, continuation_tokens=4,
                          ppl=math.exp(mean), nll=mean, window_nll=cache_nll, generate_tokens=0, cache_bytes_prompt=0,
                          cache_bytes_end=0, decode_tokens_per_s=1.0, threads=1)  # fmt: skip
        return Metrics(ppl=math.exp(sum(nll) / len(nll)), window_nll=nll, probe=probe, size=SIZE, cache=cache)

    first = {"a": metrics([1.0, 2.0], [1, 0, 1], [0.5, 0.7]), "b": metrics([1.5, 2.5], [0, 0, 1], [0.6, 0.8])}
    second = {
        "a": metrics([1.2, 2.2], [1, 1, 1], [0.4, 0.6]),
        "b": metrics([1.5, 2.5], [0, 0, 1], [0.6, 0.8]),
    }
    r = Results(first, draws=[second])
    assert r.draws == 2
    assert float(r.ppl("a")) == pytest.approx(math.exp(1.6))
    assert r.ppl("a") is r.ppl("a")  # one leaf per metric and label, shared by every expression
    assert float(r.acc("a")) == pytest.approx(5 / 6)
    assert float(r.cache_nll("b")) == pytest.approx(0.7)
    assert compare(r.ppl("a"), below("b", r.ppl("b"))).units == "2 windows x 2 draws"
    legacy = Results({"a": Metrics(ppl=3.0, size=SIZE)})
    assert legacy.ppl("a").exact and float(legacy.ppl("a")) == 3.0
