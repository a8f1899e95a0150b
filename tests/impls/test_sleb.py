"""SLEB: the cached-stream removal loss, the greedy re-scored order against full forwards, ties, barriers, and a
saved model that is a stock LLaMA."""

from __future__ import annotations

import json

import pytest
import torch
from savedmodels import save_checked

from kb.errors import KBError
from reference_impls import sleb
from reference_impls.harness.contract import Context
from reference_impls.harness.models import random_llama
from reference_impls.primitives import blocks


def test_stream_removal_losses_equal_full_forwards(calib_ids):
    """The shared primitive: the same numbers as `removal_losses`, with chunks and under an outer bypass."""
    model = random_llama(seed=3, layers=4)
    ids = calib_ids[:6, :32]
    parts = [(kind, i) for i in range(4) for kind in ("block", "attention", "mlp")]
    full = blocks.removal_losses(model, ids, parts, batch_size=4)
    assert blocks.stream_removal_losses(model, ids, parts, batch_size=4) == pytest.approx(full, abs=1e-6)
    assert len(set(full)) > 5  # the parts really differ
    with blocks.bypassed(model, [("block", 1), ("mlp", 2)]):
        full = blocks.removal_losses(model, ids, parts[6:9])
        cached = blocks.stream_removal_losses(model, ids, parts[6:9])
    assert cached == pytest.approx(full, abs=1e-6)
    # the model is left as it was
    assert blocks.removal_losses(model, ids, parts[:1]) == pytest.approx(
        blocks.removal_losses(random_llama(seed=3, layers=4), ids, parts[:1]), abs=0
    )


def test_every_round_removes_the_argmin_of_the_shortened_model(calib_ids):
    """Oracle: each removal is the lowest full-forward loss on the model with the earlier removals applied."""
    n, k = 6, 2
    model = random_llama(seed=1, layers=n)
    reference = random_llama(seed=1, layers=n)
    outcome = sleb.prune(model, calib_ids, sleb.Config(layers=k), Context())
    order = outcome.details["order"]
    gone: list[tuple[str, int]] = []
    losses = []
    for step in range(k):
        pool = [i for i in range(1, n - 1) if ("block", i) not in gone]
        with blocks.bypassed(reference, gone):
            scores = blocks.removal_losses(reference, calib_ids, [("block", i) for i in pool])
        best = pool[min(range(len(pool)), key=lambda j: (scores[j], j))]
        assert order[step] == best
        losses.append(min(scores))
        gone.append(("block", best))
    assert outcome.details["loss_after_each_removal"] == pytest.approx(losses, abs=1e-5)
    assert outcome.removed_layers == sorted(order) and model.config.num_hidden_layers == n - k
    assert set(outcome.details["first_round_loss"]) == {str(i) for i in range(1, n - 1)}


def test_a_tie_goes_to_the_earlier_block(calib_ids):
    """Two consecutive blocks with the same weights: removing either gives the same model, so the same loss."""
    model = random_llama(seed=2, layers=5)
    model.model.layers[3].load_state_dict(model.model.layers[2].state_dict())
    outcome = sleb.prune(
        model, calib_ids, sleb.Config(layers=1, early_barrier=2), Context()
    )  # candidates 2, 3
    first = outcome.details["first_round_loss"]
    assert set(first) == {"2", "3"} and first["2"] == first["3"]
    assert outcome.removed_layers == [2]


def test_barriers_keep_the_first_and_last_blocks(calib_ids):
    model = random_llama(seed=0, layers=5)
    outcome = sleb.prune(model, calib_ids, sleb.Config(layers=3), Context())
    assert outcome.removed_layers == [1, 2, 3] and len(model.model.layers) == 2
    assert outcome.details["barriers"] == [1, 1]
    assert sleb.candidates(10, 0, 0, 3) == list(range(10)) and sleb.candidates(10, 2, 3, 5) == [2, 3, 4, 5, 6]
    # too shallow for the barriers: every block is a candidate (random-llama has two layers)
    assert sleb.candidates(5, 1, 1, 4) == list(range(5)) and sleb.candidates(2, 1, 1, 1) == [0, 1]
    outcome = sleb.prune(random_llama(seed=0, layers=2), calib_ids, sleb.Config(), Context())
    assert len(outcome.removed_layers) == 1 and outcome.details["barriers"] == [0, 0]
    with pytest.raises(KBError, match="cannot remove 2 of 2"):
        sleb.prune(random_llama(seed=0, layers=2), calib_ids, sleb.Config(layers=2), Context())


def test_kept_blocks_are_untouched_and_the_saved_model_is_a_stock_llama(calib_ids, tmp_path):
    model = random_llama(seed=4, layers=6)
    before = [{k: v.clone() for k, v in layer.state_dict().items()} for layer in model.model.layers]
    outcome = sleb.prune(model, calib_ids, sleb.Config(layers=2, examples=3), Context())
    assert outcome.details["score_windows"] == [3, calib_ids.shape[1]]
    kept = [i for i in range(6) if i not in outcome.removed_layers]
    for new, old in enumerate(kept):
        state = model.model.layers[new].state_dict()
        assert all(torch.equal(state[k], before[old][k]) for k in state)
    check = save_checked(model, tmp_path / "saved")
    assert check["max_abs_logit_diff"] <= check["relative_tolerance"] * check["logit_scale"]
    config = json.loads((tmp_path / "saved" / "config.json").read_text(encoding="utf-8"))
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 4 and "auto_map" not in config
