"""Shortened LLaMA: PPL and Taylor+ block criteria, protected blocks, exact removal counts."""

from __future__ import annotations

import math

import pytest
import torch

from reference_impls import shortened_llama
from reference_impls.harness.contract import Context
from reference_impls.harness.models import random_llama
from reference_impls.primitives.blocks import mean_loss


def test_ppl_criterion_of_an_identity_block_is_the_dense_perplexity(calib_ids):
    model = random_llama(seed=0, layers=4)
    with torch.no_grad():
        model.model.layers[2].self_attn.o_proj.weight.zero_()
        model.model.layers[2].mlp.down_proj.weight.zero_()
    examples = calib_ids[:4, :32]
    scores = shortened_llama.block_scores(model, examples, "ppl")
    assert len(scores) == 4
    assert scores[2] == pytest.approx(math.exp(mean_loss(model, examples)), rel=1e-6)
    out = shortened_llama.prune(
        model, calib_ids, shortened_llama.Config(layers=2, num_examples=4, example_len=32), Context()
    )
    lowest = sorted(sorted(range(4), key=lambda i: (scores[i], i))[:2])  # random blocks may even help: argmin
    assert out.removed_layers == lowest and out.details["scores"] == pytest.approx(scores, rel=1e-5)
    assert model.config.num_hidden_layers == 2


def test_taylor_plus_protects_the_first_and_last_blocks(calib_ids):
    assert shortened_llama.protected(32) == {0, 1, 2, 3, 30, 31}
    assert shortened_llama.protected(30) == {0, 1, 2, 3, 28, 29}
    model = random_llama(seed=0, layers=6)
    with torch.no_grad():
        for p in model.model.layers[0].parameters():
            p.zero_()
    cfg = shortened_llama.Config(
        layers=2, criterion="taylor+", protect_first=1, protect_last=1, num_examples=2
    )
    out = shortened_llama.prune(model, calib_ids, cfg, Context())
    assert 0 not in out.removed_layers and 5 not in out.removed_layers and len(out.removed_layers) == 2
    scores = out.details["scores"]
    assert scores[0] == 0.0
    plain = shortened_llama.prune(random_llama(seed=0, layers=6), calib_ids,
                                  shortened_llama.Config(layers=2, criterion="taylor", num_examples=2), Context())  # fmt: skip
    assert len(plain.removed_layers) == 2


@pytest.mark.parametrize("criterion", ["random", "magnitude"])
def test_removal_count_is_exact(criterion, calib_ids):
    model = random_llama(seed=0, layers=5)
    out = shortened_llama.prune(
        model, calib_ids, shortened_llama.Config(layers=3, criterion=criterion, seed=2), Context()
    )
    assert len(out.removed_layers) == 3 and len(model.model.layers) == 2
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1]
