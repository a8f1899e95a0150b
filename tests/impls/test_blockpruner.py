"""BlockPruner: candidate order and ties, the greedy re-scored order against full forwards, the module count and
the parameter budget, and a saved model that reloads."""

from __future__ import annotations

import pytest
import torch
from savedmodels import save_checked

from kb.errors import KBError
from reference_impls import blockpruner
from reference_impls.harness.contract import Context
from reference_impls.harness.models import random_llama
from reference_impls.primitives import blocks


def test_candidates_come_in_upstreams_order():
    assert blockpruner.pool(3) == [("attention", 0), ("attention", 1), ("attention", 2), ("mlp", 0), ("mlp", 1),
                                   ("mlp", 2)]  # fmt: skip
    assert blockpruner.name(("attention", 4)) == "4.attn" and blockpruner.name(("mlp", 0)) == "0.mlp"


def test_every_round_removes_the_argmin_of_the_pruned_model(calib_ids):
    """Oracle: each removal is the lowest full-forward loss with the earlier removals masked; K counts sublayers."""
    n, k = 3, 3
    model, reference = random_llama(seed=5, layers=n), random_llama(seed=5, layers=n)
    outcome = blockpruner.prune(model, calib_ids, blockpruner.Config(layers=k), Context())
    gone: list[tuple[str, int]] = []
    for step in range(k):
        remaining = [part for part in blockpruner.pool(n) if part not in gone]
        with blocks.bypassed(reference, gone):
            scores = blocks.removal_losses(reference, calib_ids, remaining)
        best = remaining[min(range(len(remaining)), key=lambda j: (scores[j], j))]
        assert outcome.details["order"][step] == blockpruner.name(best)
        gone.append(best)
    names = sorted(gone, key=lambda part: (part[1], part[0]))
    assert outcome.removed_sublayers == [blockpruner.name(part) for part in names]
    assert len(model.model.layers) == n and model.config.skipped_attention == sorted(
        i for kind, i in gone if kind == "attention"
    )
    with (
        torch.inference_mode(),
        blocks.bypassed(reference, gone),
    ):  # the model computes what the search scored
        expected = reference(calib_ids).logits
    with torch.inference_mode():
        torch.testing.assert_close(model(calib_ids).logits, expected)


def test_ties_go_to_attention_then_the_earlier_layer(calib_ids):
    """Every sublayer's output zeroed: masking any of them changes nothing, so all losses tie exactly and the
    removals follow upstream's order (every attention sublayer by layer, then the MLPs)."""
    model = random_llama(seed=6, layers=3)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    outcome = blockpruner.prune(model, calib_ids, blockpruner.Config(layers=4), Context())
    assert len(set(outcome.details["first_round_loss"].values())) == 1
    assert outcome.details["order"] == ["0.attn", "1.attn", "2.attn", "0.mlp"]


def test_a_parameter_budget_removes_at_least_that_many_parameters(calib_ids):
    model = random_llama(seed=7, layers=4)
    layer = sum(p.numel() for p in model.model.layers[0].parameters())
    before = sum(p.numel() for p in model.model.layers.parameters())
    outcome = blockpruner.prune(model, calib_ids, blockpruner.Config(params_of_layers=1), Context())
    removed = before - sum(p.numel() for p in model.model.layers.parameters())
    assert outcome.details["budget"] == {"params": layer} and outcome.details["params_removed"] == removed
    last = blockpruner.sublayer_size(
        random_llama(seed=7, layers=4), blocks_part(outcome.details["order"][-1])
    )
    assert layer <= removed < layer + last  # the last removal crossed the budget
    with pytest.raises(KBError, match="two sizes"):
        blockpruner.prune(random_llama(seed=7, layers=4), calib_ids,
                          blockpruner.Config(layers=3, params_of_layers=1), Context())  # fmt: skip


def blocks_part(label: str) -> tuple[str, int]:
    index, kind = label.split(".")
    return ("attention" if kind == "attn" else "mlp", int(index))


def test_a_layer_emptied_of_both_sublayers_counts_twice_and_saves(calib_ids, tmp_path):
    model = random_llama(seed=8, layers=2)
    outcome = blockpruner.prune(model, calib_ids, blockpruner.Config(layers=4), Context())
    assert outcome.removed_sublayers == ["0.attn", "0.mlp", "1.attn", "1.mlp"]
    assert outcome.details["emptied_layers"] == [0, 1] and outcome.removed_layers == []
    model = random_llama(seed=8, layers=2)
    blockpruner.prune(model, calib_ids, blockpruner.Config(layers=2), Context())
    check = save_checked(model, tmp_path / "saved")
    assert check["max_abs_logit_diff"] <= check["relative_tolerance"] * check["logit_scale"]
