"""Reassessing Layer Pruning: reverse order; partial-layer fine-tuning touches only its parameters (last layers,
final norm, untied head)."""

from __future__ import annotations

import torch
from savedmodels import fresh_process, greedy

from reference_impls import reassessing_layer_pruning as rlp
from reference_impls.harness.contract import Context
from reference_impls.harness.models import byte_tokenizer, random_llama
from reference_impls.harness.recovery import Budget, partial_layer_steps
from reference_impls.harness.structure import save_model


def test_reverse_order_removes_the_last_quarter_rounded_up(calib_ids):
    model = random_llama(seed=0, layers=6)
    out = rlp.prune(model, calib_ids, rlp.Config(recovery="none"), Context())
    assert out.removed_layers == [4, 5] and model.config.num_hidden_layers == 4
    model = random_llama(seed=0, layers=6)
    out = rlp.prune(model, calib_ids, rlp.Config(layers=2, metric="bi", recovery="none"), Context())
    scores = out.details["scores"]
    assert out.removed_layers == sorted(sorted(range(6), key=lambda i: (scores[i], i))[:2])


def test_partial_layer_fine_tuning_changes_only_the_last_layers_the_final_norm_and_the_untied_head(calib_ids):
    model = random_llama(seed=0, layers=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    embed = model.get_input_embeddings().weight.clone()
    report = partial_layer_steps(model, calib_ids, Budget(3, 2), last=2, head=True, norm=True, lr=1e-3)
    assert report.steps == 3 and report.tokens == 3 * 2 * 64
    after = model.state_dict()
    trained = [
        k for k in after if k.startswith(("model.layers.3.", "model.layers.4.", "model.norm.", "lm_head."))
    ]
    frozen = [k for k in after if k not in trained]
    assert frozen and all(torch.equal(after[k], before[k]) for k in frozen if k in before)
    assert torch.equal(model.get_input_embeddings().weight, embed)
    assert model.lm_head.weight is not model.get_input_embeddings().weight
    assert not torch.equal(model.lm_head.weight, embed)
    assert not torch.equal(after["model.norm.weight"], before["model.norm.weight"])
    assert any(not torch.equal(after[k], before[k]) for k in trained if k.startswith("model.layers.4"))


def test_prune_trains_the_final_norm_and_leaves_the_frozen_layers(calib_ids):
    """The driver's path (frozen prefix cached): of 5 layers 1 is removed, the last 3 of the 4 left, the
    final norm and the head train; layer 0 and the input embedding stay bit-identical."""
    dense = random_llama(seed=0, layers=5).state_dict()
    for norm in (True, False):
        model = random_llama(seed=0, layers=5)
        out = rlp.prune(model, calib_ids, rlp.Config(layers=1, steps=3, lr=1e-3, norm=norm), Context())
        assert out.removed_layers == [4] and out.details["fine_tuning"]["steps"] == 3
        after = model.state_dict()
        layer0 = [k for k in after if k.startswith("model.layers.0.")]
        assert layer0 and all(torch.equal(after[k], dense[k]) for k in layer0)
        assert torch.equal(after["model.embed_tokens.weight"], dense["model.embed_tokens.weight"])
        assert not torch.equal(after["lm_head.weight"], dense["lm_head.weight"])
        assert not torch.equal(
            after["model.layers.3.mlp.down_proj.weight"], dense["model.layers.3.mlp.down_proj.weight"]
        )
        assert torch.equal(after["model.norm.weight"], dense["model.norm.weight"]) is not norm


def test_equal_budgets_and_a_fresh_process_load_of_the_untied_model(calib_ids, tmp_path):
    a, b = random_llama(seed=0, layers=4), random_llama(seed=0, layers=4)
    pa = rlp.prune(a, calib_ids, rlp.Config(layers=1, steps=2, recovery="partial"), Context())
    pb = rlp.prune(b, calib_ids, rlp.Config(layers=1, steps=2, recovery="lora"), Context())
    assert pa.details["fine_tuning"]["tokens"] == pb.details["fine_tuning"]["tokens"]
    assert b.lm_head.weight is b.get_input_embeddings().weight  # LoRA leaves the tie alone
    expected = greedy(a)
    save_model(a, byte_tokenizer(), tmp_path / "m")
    got = fresh_process(tmp_path / "m", tmp_path)
    assert got["layers"] == 3 and got["tokens"] == expected[0].tolist()
    assert got["params"] == sum(p.numel() for p in a.parameters())
