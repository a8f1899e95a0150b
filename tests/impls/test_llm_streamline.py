"""LLM-Streamline: window choice, replacement training, layer count, equivalence with plain removal, saving."""

from __future__ import annotations

import torch
from savedmodels import PROMPT, fresh_process, greedy, save_checked

from reference_impls import llm_streamline
from reference_impls.harness.contract import Context
from reference_impls.harness.models import random_llama
from reference_impls.primitives.blocks import bypassed


def test_the_window_maximises_similarity_and_training_lowers_the_mse(calib_ids):
    model = random_llama(seed=0, layers=5)
    out = llm_streamline.prune(
        model, calib_ids, llm_streamline.Config(layers=3, steps=30, lr=1e-3), Context()
    )
    sims = out.details["window_cosine"]
    start = out.details["start"]
    assert len(sims) == 3 and sims[start] == max(sims)
    assert out.removed_layers == [start + 1, start + 2] and out.removed_sublayers == [f"{start}.attn"]
    assert model.config.num_hidden_layers == 5 - 3 + 1 and model.config.skipped_attention == [start]
    assert out.details["mse_after_training"] < out.details["mse_before_training"]
    greedy(model)


def test_identity_replacement_without_training_equals_plain_removal(calib_ids):
    plain = random_llama(seed=0, layers=4)
    replaced = random_llama(seed=0, layers=4)
    a = llm_streamline.prune(plain, calib_ids, llm_streamline.Config(layers=1, replacement="none"), Context())
    b = llm_streamline.prune(
        replaced, calib_ids, llm_streamline.Config(layers=1, init="identity", steps=0), Context()
    )
    assert a.details["start"] == b.details["start"] and a.removed_layers == [a.details["start"]]
    assert b.removed_layers == [] and len(replaced.model.layers) == 4
    with torch.inference_mode():
        torch.testing.assert_close(replaced(calib_ids[:2]).logits, plain(calib_ids[:2]).logits, rtol=1e-5,
                                   atol=1e-5)  # fmt: skip
    dense = random_llama(seed=0, layers=4)
    with torch.inference_mode(), bypassed(dense, [("block", a.details["start"])]):
        torch.testing.assert_close(
            dense(calib_ids[:2]).logits, plain(calib_ids[:2]).logits, rtol=1e-5, atol=1e-5
        )


def test_the_replaced_model_saves_and_generates_in_a_fresh_process(calib_ids, tmp_path):
    model = random_llama(seed=0, layers=4)
    llm_streamline.prune(model, calib_ids, llm_streamline.Config(layers=2, steps=5), Context())
    expected = greedy(model)
    save_checked(model, tmp_path / "m")
    got = fresh_process(tmp_path / "m", tmp_path)
    assert got["layers"] == 3 and got["tokens"] == expected[0].tolist()
    assert got["params"] == sum(p.numel() for p in model.parameters())
    assert PROMPT.shape[1] < len(got["tokens"])
