"""Deeper layers: angular-distance table, window choice, removal equals skipping, healing."""

from __future__ import annotations

import pytest
import torch
from savedmodels import greedy

from reference_impls import deeper_layers
from reference_impls.harness.contract import Context
from reference_impls.harness.models import random_llama
from reference_impls.primitives.blocks import bypassed


def _identity_window(model, start, n):
    with torch.no_grad():
        for i in range(start, start + n):
            model.model.layers[i].self_attn.o_proj.weight.zero_()
            model.model.layers[i].mlp.down_proj.weight.zero_()


def test_the_identity_window_has_zero_distance_and_is_chosen(calib_ids):
    model = random_llama(seed=0, layers=6)
    _identity_window(model, 2, 2)
    d = deeper_layers.angular_distances(model, calib_ids, 2)
    assert len(d) == 5 and all(0.0 <= v <= 1.0 for v in d)
    assert d[2] == pytest.approx(0.0, abs=1e-3) and min(d[:2] + d[3:]) > 1e-3
    outcome = deeper_layers.prune(model, calib_ids, deeper_layers.Config(layers=2, heal_steps=0), Context())
    assert outcome.removed_layers == [2, 3] and outcome.details["start"] == 2
    assert model.config.num_hidden_layers == 4


def test_removal_equals_skipping_the_window(calib_ids):
    dense = random_llama(seed=0, layers=5)
    model = random_llama(seed=0, layers=5)
    deeper_layers.prune(
        model, calib_ids, deeper_layers.Config(layers=2, selection="window", start=1, heal_steps=0), Context()
    )
    with torch.inference_mode(), bypassed(dense, [("block", 1), ("block", 2)]):
        expected = dense(calib_ids[:2]).logits
    with torch.inference_mode():
        torch.testing.assert_close(model(calib_ids[:2]).logits, expected, rtol=1e-5, atol=1e-5)
    greedy(model)


def test_deepest_heuristic_and_clamped_windows(calib_ids):
    assert deeper_layers.deepest_window(30, 6) == 23
    model = random_llama(seed=0, layers=4)
    out = deeper_layers.prune(
        model, calib_ids, deeper_layers.Config(layers=2, selection="deepest", heal_steps=0), Context()
    )
    assert out.removed_layers == [1, 2]
    model = random_llama(seed=0, layers=4)
    out = deeper_layers.prune(model, calib_ids,
                              deeper_layers.Config(layers=2, selection="window", start=9, heal_steps=0), Context())  # fmt: skip
    assert out.removed_layers == [2, 3] and out.details["clamped_from"] == 9


def test_healing_trains_lora_merged_into_the_same_shapes(calib_ids):
    plain = random_llama(seed=0, layers=4)
    healed = random_llama(seed=0, layers=4)
    cfg = {"layers": 1, "selection": "window", "start": 1}
    deeper_layers.prune(plain, calib_ids, deeper_layers.Config(**cfg, heal_steps=0), Context())
    out = deeper_layers.prune(
        healed, calib_ids, deeper_layers.Config(**cfg, heal_steps=3, heal_batch=2), Context()
    )
    a, b = plain.state_dict(), healed.state_dict()
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert out.details["healing"]["steps"] == 3 and out.details["healing"]["tokens"] == 3 * 2 * 64
    greedy(healed)
