"""Headline orderings on the real SmolLM2-135M (`tiny-llama`), with small calibration/evaluation budgets.

Relative checks only (orderings with margins); the measured numbers belong in the knowledge base.
"""

from __future__ import annotations

import math

import pytest
import torch

from reference_impls import magnitude, sparsegpt, wanda
from reference_impls.harness import evaluate, layerwise
from reference_impls.harness.contract import Context

pytestmark = pytest.mark.slow

_METHODS = {"magnitude": magnitude, "wanda": wanda, "sparsegpt": sparsegpt}


def _pruned_ppl(tiny_llama, method: str, **target) -> tuple[float, dict[str, torch.Tensor]]:
    loaded, data, dense = tiny_llama
    model = loaded.model
    model.load_state_dict(dense)
    module = _METHODS[method]
    module.prune(model, data.calib, module.Config(**target), Context())
    weights = {n: lin.weight.detach().clone() for n, lin in layerwise.iter_decoder_linears(model)}
    ppl = evaluate.perplexity(model, data.eval)
    model.load_state_dict(dense)
    return ppl, weights


@pytest.fixture(scope="module")
def ppl_50(tiny_llama):
    return {m: _pruned_ppl(tiny_llama, m, sparsity=0.5)[0] for m in _METHODS}


def test_dense_perplexity_equals_plain_loss(tiny_llama):
    loaded, data, dense = tiny_llama
    loaded.model.load_state_dict(dense)
    ppl = evaluate.perplexity(loaded.model, data.eval, batch_size=3)
    with torch.inference_mode():
        losses = [float(loaded.model(w[None], labels=w[None]).loss) for w in data.eval]
    assert ppl == pytest.approx(math.exp(sum(losses) / len(losses)), rel=1e-4)


def test_wanda_far_better_than_magnitude(ppl_50):
    assert ppl_50["wanda"] < 0.5 * ppl_50["magnitude"], ppl_50


def test_sparsegpt_at_least_level_with_wanda(ppl_50):
    assert ppl_50["sparsegpt"] <= 1.15 * ppl_50["wanda"], ppl_50
    assert ppl_50["sparsegpt"] < 0.7 * ppl_50["magnitude"], ppl_50


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_two_four_is_exact_and_usable(tiny_llama, method):
    """The dequantised Q4_1 checkpoint already holds a few exact zeros; those may add to a group's two."""
    ppl, weights = _pruned_ppl(tiny_llama, method, pattern=(2, 4))
    dense = dict(layerwise.iter_decoder_linears(tiny_llama[0].model))
    for name, w in weights.items():
        zeros = (w == 0).reshape(w.shape[0], -1, 4).sum(-1)
        already = (dense[name].weight == 0).reshape(w.shape[0], -1, 4).sum(-1)
        assert (zeros >= 2).all() and (zeros <= 2 + already).all(), name
        assert (zeros == 2).float().mean() > 0.99
    assert math.isfinite(ppl)
