"""Heterogeneous sublayers: progressive removal to the budget, one removal per round, accounting, block arm."""

from __future__ import annotations

import math

import pytest
from savedmodels import greedy

from reference_impls import heterogeneous_sublayers as hs
from reference_impls.harness.contract import Context
from reference_impls.harness.models import random_llama


def _decoder_params(model):
    return sum(p.numel() for p in model.model.layers.parameters())


def test_normalized_impact():
    assert hs.relative_impact(3.0, 2.0) == 0.5
    assert hs.normalized_impact(3.0, 2.0, 100) == pytest.approx(0.005)


def test_progressive_removal_meets_the_budget_one_sublayer_per_round(calib_ids):
    model = random_llama(seed=0, layers=3)
    dense = _decoder_params(model)
    out = hs.prune(model, calib_ids, hs.Config(fraction=0.3, examples=2, example_len=32), Context())
    budget = math.ceil(0.3 * dense)
    removed = dense - _decoder_params(model)
    assert out.details["budget"] == budget and removed == out.details["params_removed"] >= budget
    order = out.details["order"]
    assert out.details["rounds"] == len(order)  # re-scored before every removal
    # the budget was not yet met before the last removal
    sizes = {"attention": 2 * 64 * 64 + 2 * 64 * 32 + 64, "mlp": 3 * 64 * 128 + 64}  # with the pre-norm
    last = order[-1].split(".")[1]
    assert removed - sizes[last] < budget
    assert len(out.removed_sublayers) + 2 * len(out.removed_layers) == len(order)
    greedy(model)


def test_per_round_removals_and_whole_layer_conversion(calib_ids):
    model = random_llama(seed=0, layers=3)
    out = hs.prune(
        model, calib_ids, hs.Config(fraction=0.6, per_round=3, examples=2, example_len=32), Context()
    )
    assert out.details["rounds"] == math.ceil(len(out.details["order"]) / 3)
    for i in out.removed_layers:  # a layer that lost both sublayers is removed outright
        assert f"{i}.attention" in out.details["order"] and f"{i}.mlp" in out.details["order"]
    assert model.config.num_hidden_layers == 3 - len(out.removed_layers)


def test_the_block_arm_removes_whole_blocks_to_the_same_budget(calib_ids):
    model = random_llama(seed=0, layers=5)
    dense = _decoder_params(model)
    out = hs.prune(model, calib_ids, hs.Config(fraction=0.2, unit="block"), Context())
    assert out.removed_layers and model.config.num_hidden_layers == 5 - len(out.removed_layers)
    assert dense - _decoder_params(model) == out.details["params_removed"] >= math.ceil(0.2 * dense)
