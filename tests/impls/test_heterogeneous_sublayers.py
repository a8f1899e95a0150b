"""Heterogeneous sublayers: progressive removal to the budget, the re-scoring interval, candidate losses from the
cached stream, the same scoring tokens in both arms, accounting, block arm."""

from __future__ import annotations

import math

import pytest
import torch
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


def test_candidate_losses_from_the_cached_stream_equal_full_forwards(calib_ids):
    """The loss with a sublayer bypassed, run from its layer's cached input, is the full-forward loss (also
    with a sublayer already skipped and with the windows in chunks)."""
    from reference_impls.harness.structure import skip_sublayers
    from reference_impls.primitives.blocks import mean_loss, removal_losses

    model = random_llama(seed=0, layers=3)
    skip_sublayers(model, attention=[1])
    ids = calib_ids[:3, :48]
    candidates = [("attention", 0), ("mlp", 0), ("mlp", 1), ("attention", 2), ("mlp", 2)]
    expected = removal_losses(model, ids, candidates)
    for batch_size in (None, 2):
        streams = hs.stream_pass(model, ids, batch_size)
        assert streams.loss == pytest.approx(mean_loss(model, ids), rel=1e-6)
        assert hs.candidate_losses(model, streams, candidates) == pytest.approx(expected, rel=1e-6)


def _spy(monkeypatch, name, calls):
    real = getattr(hs, name)

    def spy(model, ids, *args, **kwargs):
        calls.append(ids.clone())
        return real(model, ids, *args, **kwargs)

    monkeypatch.setattr(hs, name, spy)


def test_both_arms_score_the_same_tokens_at_the_windows_full_length(calib_ids, monkeypatch):
    seen: dict[str, list] = {"sublayer": [], "block": []}
    _spy(monkeypatch, "stream_pass", seen["sublayer"])
    _spy(monkeypatch, "layer_io_cosine", seen["block"])
    details = {}
    for unit in ("sublayer", "block"):
        out = hs.prune(
            random_llama(seed=0, layers=4), calib_ids, hs.Config(fraction=0.2, unit=unit), Context()
        )
        details[unit] = out.details
    first = calib_ids[:1]  # the default: one calibration window, all 64 of its tokens
    assert seen["sublayer"] and len(seen["block"]) == 1
    assert all(torch.equal(ids, first) for ids in seen["sublayer"] + seen["block"])
    assert details["sublayer"]["score_tokens"] == details["block"]["score_tokens"] == 64
    assert details["sublayer"]["score_windows"] == details["block"]["score_windows"] == [1, 64]


@pytest.mark.parametrize("per_round", [1, 2])
def test_the_rescoring_interval_is_honoured(calib_ids, monkeypatch, per_round):
    """One pass of the current model per round, a round every `per_round` removals, and each round scores
    every remaining candidate once."""
    passes: list = []
    scored: list[int] = []
    _spy(monkeypatch, "stream_pass", passes)
    real = hs.candidate_losses

    def counted(model, streams, candidates):
        scored.append(len(candidates))
        return real(model, streams, candidates)

    monkeypatch.setattr(hs, "candidate_losses", counted)
    model = random_llama(seed=0, layers=4)
    out = hs.prune(model, calib_ids, hs.Config(fraction=0.45, per_round=per_round, example_len=32), Context())
    removals = len(out.details["order"])
    assert removals >= 3  # enough removals for the interval to matter
    assert len(passes) == out.details["rounds"] == math.ceil(removals / per_round)
    assert scored == [8 - per_round * r for r in range(len(passes))]
