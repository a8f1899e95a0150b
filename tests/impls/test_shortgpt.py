"""ShortGPT: Block Influence from hooks, its identity value, selection, and removal on random-llama."""

from __future__ import annotations

import pytest
import torch

from reference_impls import shortgpt
from reference_impls.harness.contract import Context
from reference_impls.harness.models import random_llama
from reference_impls.primitives import blocks


def test_cosine_and_angular_distance_oracles():
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    y = torch.tensor([[0.0, 2.0], [2.0, 2.0], [0.0, 0.0]])
    cos = blocks.token_cosine(x, y)
    torch.testing.assert_close(cos, torch.tensor([0.0, 1.0, 1.0]))
    torch.testing.assert_close(blocks.angular_distance(cos), torch.tensor([0.5, 0.0, 0.0]))
    assert blocks.block_influence(-1.0) == 2.0 and blocks.block_influence(1.0) == 0.0


def _identity_layer(model, index):
    with torch.no_grad():
        model.model.layers[index].self_attn.o_proj.weight.zero_()
        model.model.layers[index].mlp.down_proj.weight.zero_()


def test_an_identity_layer_has_zero_influence_and_goes_first(calib_ids):
    model = random_llama(seed=0, layers=6)
    _identity_layer(model, 3)
    bi = shortgpt.block_influences(model, calib_ids)
    assert all(0.0 <= b <= 2.0 for b in bi)
    assert bi[3] == pytest.approx(0.0, abs=1e-6) and min(bi[:3] + bi[4:]) > 1e-3
    outcome = shortgpt.prune(model, calib_ids, shortgpt.Config(layers=1), Context())
    assert outcome.removed_layers == [3] and outcome.details["block_influence"][3] == pytest.approx(
        0, abs=1e-6
    )


def test_hooks_agree_with_output_hidden_states(calib_ids):
    model = random_llama(seed=0, layers=4)
    cos = blocks.layer_io_cosine(model, calib_ids, batch_size=3)
    with torch.inference_mode():
        states = model(calib_ids, output_hidden_states=True, use_cache=False).hidden_states
    for i in range(3):  # the last entry of hidden_states has the final norm applied: not comparable
        expected = blocks.token_cosine(states[i], states[i + 1]).mean().item()
        assert cos[i] == pytest.approx(expected, abs=1e-5)


def test_selection_rules():
    scores = [0.3, 0.1, 0.5, 0.1, 0.9, 0.2]
    assert shortgpt.select_layers(scores, 3, "lowest") == [1, 3, 5]
    assert shortgpt.select_layers(scores, 2, "highest") == [2, 4]
    a = shortgpt.select_layers(scores, 3, "random", seed=4)
    assert a == shortgpt.select_layers(scores, 3, "random", seed=4) and len(set(a)) == 3
    assert {tuple(shortgpt.select_layers(scores, 3, "random", seed=s)) for s in range(8)} != {tuple(a)}
    with pytest.raises(ValueError):
        shortgpt.select_layers(scores, 6, "lowest")


def test_prune_removes_the_k_lowest_and_keeps_the_rest_untouched(calib_ids):
    model = random_llama(seed=0, layers=6)
    kept_before = {
        i: {k: v.clone() for k, v in layer.state_dict().items()} for i, layer in enumerate(model.model.layers)
    }
    bi = shortgpt.block_influences(model, calib_ids)
    outcome = shortgpt.prune(model, calib_ids, shortgpt.Config(layers=2), Context())
    expected = sorted(sorted(range(6), key=lambda i: (bi[i], i))[:2])
    assert outcome.removed_layers == expected and model.config.num_hidden_layers == 4
    survivors = [i for i in range(6) if i not in expected]
    for new, old in enumerate(survivors):
        state = model.model.layers[new].state_dict()
        assert all(torch.equal(state[k], kept_before[old][k]) for k in state)


def test_sibling_runs_share_the_dense_scores(monkeypatch):
    """lowest-BI and highest-BI arms of one comparison compute Block Influence once, on the dense model."""
    from reference_impls import registry
    from reference_impls.harness import runner
    from reference_impls.harness.data import pydoc_corpus, token_data
    from reference_impls.harness.models import byte_tokenizer
    from reference_impls.registry import Run

    calls = []
    real = shortgpt.block_influences
    monkeypatch.setattr(shortgpt, "block_influences", lambda *a, **k: calls.append(1) or real(*a, **k))
    data = token_data(byte_tokenizer(), pydoc_corpus(), nsamples=4, seqlen=64, eval_tokens=256, seed=0)
    dense = random_llama(seed=0, layers=6)
    spec = registry.METHODS["shortgpt"]
    plans = [
        runner.Plan(Run(s, "shortgpt"), spec, shortgpt.Config(layers=2, selection=s))
        for s in ("lowest", "highest")
    ]
    low, high = runner.compare(
        dense, byte_tokenizer(), data, plans, runner.RunOptions(), log=lambda _m: None
    )[1:]
    assert len(calls) == 1
    bi = real(dense, data.calib)
    assert low.outcome.removed_layers == shortgpt.select_layers(bi, 2, "lowest")
    assert high.outcome.removed_layers == shortgpt.select_layers(bi, 2, "highest")
