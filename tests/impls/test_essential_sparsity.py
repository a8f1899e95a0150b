"""Essential sparsity: one global magnitude threshold, exact counts, nested masks, and the knee detector."""

from __future__ import annotations

import pytest
import torch

from reference_impls import essential_sparsity as es
from reference_impls.harness.contract import Context, model_facts
from reference_impls.harness.layerwise import iter_decoder_linears
from reference_impls.harness.models import random_llama


def test_one_threshold_over_all_matrices_exact_count_and_differing_matrix_sparsities():
    a = torch.tensor([[0.1, 5.0], [0.2, 6.0]])
    b = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.05, 7.0]])
    ma, mb = es.global_magnitude_masks([a, b], 0.4)  # 10 weights -> 4 smallest overall
    assert ma.tolist() == [[True, False], [True, False]] and mb.tolist() == [
        [True, False, False],
        [False, True, False],
    ]
    assert int(ma.sum() + mb.sum()) == 4


def test_model_sparsity_is_exact_and_masks_are_nested():
    dense = random_llama(seed=0, layers=2)
    previous = None
    for s in (0.1, 0.3, 0.6):
        model = random_llama(seed=0, layers=2)
        es.prune(model, None, es.Config(sparsity=s), Context())
        facts = model_facts(model)
        assert facts.zeros == int(facts.weights * s)
        zero = torch.cat([(lin.weight == 0).reshape(-1) for _n, lin in iter_decoder_linears(model)])
        per_matrix = {
            round(float((lin.weight == 0).float().mean()), 3) for _n, lin in iter_decoder_linears(model)
        }
        assert len(per_matrix) > 1  # one threshold, not one ratio per matrix
        if previous is not None:
            assert bool((previous & ~zero).sum() == 0)  # pruned at s1 stays pruned at s2 > s1
        previous = zero
        kept = [(lin.weight != 0) for _n, lin in iter_decoder_linears(model)]
        for (_n, lin), (_m, d), k in zip(
            iter_decoder_linears(model), iter_decoder_linears(dense), kept, strict=True
        ):
            assert torch.equal(lin.weight[k], d.weight[k])  # survivors untouched


def test_zero_sparsity_leaves_the_model_unchanged():
    model, dense = random_llama(seed=0), random_llama(seed=0)
    es.prune(model, None, es.Config(sparsity=0.0), Context())
    assert all(
        torch.equal(x, y)
        for x, y in zip(model.state_dict().values(), dense.state_dict().values(), strict=True)
    )


@pytest.mark.parametrize(
    ("points", "knee"),
    [
        ([(0.0, 10.0), (0.1, 10.2), (0.2, 10.9), (0.3, 11.5), (0.4, 30.0)], 0.2),
        ([(0.0, 10.0), (0.1, 12.0), (0.2, 10.0)], 0.0),  # the band must hold for every point up to the knee
        ([(0.2, 10.5), (0.0, 10.0), (0.1, 10.1)], 0.2),  # order of the points does not matter
        ([(0.0, 10.0), (0.1, float("nan"))], 0.0),
    ],
)
def test_knee_detector(points, knee):
    assert es.essential_sparsity(points, 10.0, 0.1) == knee


def test_claim_reads_the_sweep_and_figure_has_every_point():
    from kb.results import Metrics, Size
    from reference_impls.claims.essential_sparsity import PAPER, SWEEP, sweep_label
    from reference_impls.registry import Results

    size = Size(
        params_total=1, params_non_embedding=1, params_decoder=1, weight_bytes=1, decoder_sparsity=0, layers=1
    )
    ppl = [10.0, 10.1, 10.3, 10.6, 11.5, 14.0, 20.0, 40.0, 90.0, 400.0]
    metrics = {"dense": Metrics(ppl=ppl[0], size=size)}
    metrics.update({sweep_label(s): Metrics(ppl=p, size=size) for s, p in zip(SWEEP, ppl[1:], strict=True)})
    judged = PAPER.check(Results(metrics))
    assert judged.holds and "= 30%" in judged.reason
    assert PAPER.figures is not None
    fig = PAPER.figures(Results(metrics))[0]
    assert fig.series[0].x == [0.0, *SWEEP] and fig.series[0].y == ppl
    ppl[5] = 9.0  # not monotone -> the claim fails
    metrics[sweep_label(0.5)] = Metrics(ppl=9.0, size=size)
    assert not PAPER.check(Results(metrics)).holds
