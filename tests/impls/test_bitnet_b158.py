"""BitNet b1.58 stand-in: the quantisers, BitLinear, the straight-through estimator, the training comparison."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kb.results import Outcome
from reference_impls import bitnet_b158 as bn
from reference_impls import registry
from reference_impls.harness.contract import Context

TINY = bn.Config(hidden=16, steps=6, batch_size=2, seqlen=16, log_every=2)


@pytest.fixture(scope="module")
def tiny_run():
    """The training comparison at a tiny budget, on a random model it must leave alone (run once per module)."""
    from reference_impls.harness.models import random_llama

    model = random_llama(seed=0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    details = bn.prune(model, None, TINY, Context()).details
    return details, state, model


def test_weights_take_exactly_three_values_scaled_by_the_mean_magnitude():
    w = torch.randn(32, 48, generator=torch.Generator().manual_seed(0))
    q = bn.weight_quant(w)
    gamma = w.abs().mean()
    assert set(torch.unique(q).tolist()) <= {-float(gamma), 0.0, float(gamma)}
    assert torch.unique(q).numel() == 3
    assert torch.equal(bn.ternary_codes(w), (w / gamma).round().clamp(-1, 1))
    assert torch.equal(bn.weight_quant(torch.zeros(3, 3)), torch.zeros(3, 3))  # guarded scale


def test_activation_codes_are_per_token_int8():
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(1)) * 10
    codes, scale = bn.activation_codes(x)
    assert torch.equal(codes, codes.round()) and codes.min() >= -128 and codes.max() <= 127
    assert torch.equal(codes.abs().amax(-1), torch.full((2, 5), 127.0))  # each token's largest maps to 127
    assert scale.shape == (2, 5, 1)
    assert (bn.activation_quant(x) - x).abs().max() <= (x.abs().amax(-1, keepdim=True) / 254).max() + 1e-5


def test_bitlinear_output_is_the_quantised_product():
    layer = bn.BitLinear(16, 8, bias=False)
    x = torch.randn(3, 16)
    expected = F.linear(bn.activation_quant(bn.rms_norm(x)), bn.weight_quant(layer.weight))
    torch.testing.assert_close(layer(x), expected)


def test_straight_through_gradient_reaches_the_latent_weights():
    layer = bn.BitLinear(16, 8, bias=False)
    x = torch.randn(4, 16, requires_grad=True)
    layer(x).pow(2).sum().backward()
    wq = bn.weight_quant(layer.weight.detach()).requires_grad_()
    xq = bn.activation_quant(bn.rms_norm(x.detach()))
    F.linear(xq, wq).pow(2).sum().backward()
    torch.testing.assert_close(layer.weight.grad, wq.grad)  # d loss / d latent W == d loss / d quantised W
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_to_bitnet_swaps_every_decoder_linear_and_nothing_else(random_model):
    before = copy.deepcopy(random_model)
    assert bn.to_bitnet(random_model) == 14
    kinds = [
        type(m) for layer in random_model.model.layers for m in layer.modules() if isinstance(m, nn.Linear)
    ]
    assert kinds == [bn.BitLinear] * 14
    assert type(random_model.lm_head) is nn.Linear  # the output head stays full precision
    for (name, a), b in zip(before.state_dict().items(), random_model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name  # same latent weights
    with torch.inference_mode():
        assert torch.isfinite(random_model(torch.randint(0, 256, (1, 8))).logits).all()


def test_training_run_compares_equal_budgets_and_leaves_the_model_alone(tiny_run):
    d, state, model = tiny_run
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert d["fp"]["curve_steps"] == d["ternary"]["curve_steps"] == [2, 4, 6]
    assert d["fp"]["bitlinear_layers"] == 0 and d["ternary"]["bitlinear_layers"] == 14
    assert d["ternary"]["max_distinct_weight_values"] == 3
    assert d["fp"]["eval_loss"] != d["ternary"]["eval_loss"] and d["tokens"] == 6 * 2 * 16
    assert d["eval_ratio"] == pytest.approx(d["ternary"]["eval_loss"] / d["fp"]["eval_loss"])


def test_claim_and_figure_read_the_run(tiny_run):
    spec = registry.PAPERS["bitnet-b158"]
    d = tiny_run[0]
    results = registry.Results({}, {"qat": Outcome(kind="training", details=d)})
    judged = spec.check(results)
    reason = judged.reason
    assert judged.holds == (d["ternary"]["eval_loss"] <= 1.15 * d["fp"]["eval_loss"]) and "1.15 x" in reason
    (figure,) = spec.figures(results)
    assert [s.y for s in figure.series] == [d["fp"]["curve_loss"], d["ternary"]["curve_loss"]]
    fp_windows = d["fp"]["eval_window_loss"]
    assert len(fp_windows) >= 2 and sum(fp_windows) / len(fp_windows) == pytest.approx(
        d["fp"]["eval_loss"], rel=1e-4
    )
    worse = {**d, "ternary": {**d["ternary"], "eval_loss": 1.2 * d["fp"]["eval_loss"],
                              "eval_window_loss": [1.2 * v for v in fp_windows]}}  # fmt: skip
    assert not spec.check(registry.Results({}, {"qat": Outcome(kind="training", details=worse)})).holds
