"""Sheared LLaMA on `random-llama`: the exact target shape, equal token budgets across arms, a saved model."""

from __future__ import annotations

import pytest
import torch

from kb.errors import KBError
from reference_impls import sheared_llama as S
from reference_impls.harness.contract import Context
from reference_impls.harness.models import random_llama
from reference_impls.primitives import groups as G

SHORT = {"mask_steps": 3, "train_steps": 2, "batch_size": 2}


def _shape(model):
    _heads, kv = G.attention_widths(model, 0)
    return {"layers": len(model.model.layers), "kv": kv, "intermediate": G.mlp_width(model, 0),
            "hidden": int(model.config.hidden_size)}  # fmt: skip


def test_default_target_is_the_stories42m_fraction_of_the_model():
    model = random_llama(seed=0, layers=4)  # 4 layers, 2 KV groups, MLP 128, hidden 64
    assert S.target_shape(model, S.Config()) == {"layers": 1, "kv": 1, "intermediate": 115, "hidden": 57}
    given = S.Config(target_layers=3, target_kv_heads=2, target_intermediate=64, target_hidden=48)
    assert S.target_shape(model, given) == {"layers": 3, "kv": 2, "intermediate": 64, "hidden": 48}
    with pytest.raises(KBError, match="exceeds"):
        S.target_shape(model, S.Config(target_hidden=65))
    with pytest.raises(KBError, match="nothing to prune"):
        S.target_shape(
            model, S.Config(target_layers=4, target_kv_heads=2, target_intermediate=128, target_hidden=64)
        )


@pytest.mark.parametrize("init", ["learned", "random-masks", "random-init"])
def test_every_arm_ends_at_the_target_shape_after_the_same_tokens(calib_ids, init):
    model = random_llama(seed=0, layers=4)
    config = S.Config(
        init=init, target_layers=2, target_kv_heads=1, target_intermediate=96, target_hidden=48, **SHORT
    )
    out = S.prune(model, calib_ids, config, Context())
    assert _shape(model) == {"layers": 2, "kv": 1, "intermediate": 96, "hidden": 48}
    assert out.details["training_tokens"] == (3 + 2) * 2 * 64
    assert len(out.details["removed_layers"]) == 2
    # the config a save writes: a stock LLaMA with the smaller widths
    c = model.config
    assert (c.num_hidden_layers, c.num_key_value_heads, c.num_attention_heads, c.intermediate_size) == (
        2,
        1,
        2,
        96,
    )
    with torch.inference_mode():
        assert torch.isfinite(model(calib_ids[:2]).logits).all()
    if init == "learned":
        report = out.details["mask_learning"]
        assert report["steps"] == 3 and report["tokens"] == 3 * 2 * 64
        assert set(out.details["expected_sparsity_end"]) == {"heads", "intermediate", "layers", "hidden"}


def test_random_init_replaces_the_pretrained_weights(calib_ids):
    kept, fresh = random_llama(seed=0, layers=4), random_llama(seed=0, layers=4)
    for p in fresh.parameters():
        p._is_hf_initialized = (
            True  # as after `from_pretrained`: Hugging Face's own initialiser would skip them
        )
    no_training = {**SHORT, "mask_steps": 0, "train_steps": 0}
    S.prune(kept, calib_ids, S.Config(init="random-masks", **no_training), Context())
    S.prune(fresh, calib_ids, S.Config(init="random-init", **no_training), Context())
    a, b = kept.model.layers[0].mlp.up_proj.weight, fresh.model.layers[0].mlp.up_proj.weight
    assert a.shape == b.shape and not torch.equal(a, b)
    assert not torch.equal(kept.model.embed_tokens.weight, fresh.model.embed_tokens.weight)
    assert torch.equal(fresh.model.norm.weight, torch.ones_like(fresh.model.norm.weight))
    assert abs(float(b.detach().std()) - kept.config.initializer_range) < 0.005  # the model's own initialiser


def test_kb_prune_saves_a_model_that_loads_and_generates_in_a_fresh_process(tmp_path, capsys):
    from kb_cli.main import main
    from tests.impls.savedmodels import fresh_process

    save = tmp_path / "sheared"
    args = ["prune", "sheared-llama", "--model", "random-llama", "--nsamples", "8", "--seqlen", "64",
            "--eval-tokens", "256", "--set", "mask_steps=2", "--set", "train_steps=1", "--set", "batch_size=2",
            "--save", str(save)]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    got = fresh_process(save, tmp_path, remote=None)
    assert got["layers"] == 1 and len(got["tokens"]) == 8 + 6


def test_kb_reproduce_records_three_arms_of_one_shape_and_equal_tokens(tmp_path, capsys):
    import json

    from kb_cli.main import main

    out = tmp_path / "r.json"
    args = ["reproduce", "sheared-llama", "--model", "random-llama", "--nsamples", "8", "--seqlen", "64",
            "--eval-tokens", "256", "--probe-items", "20", "--set", "mask_steps=2", "--set", "train_steps=1",
            "--set", "batch_size=2", "--json", str(out)]  # fmt: skip
    assert main(args) in (0, 1)
    capsys.readouterr()
    runs = {r["label"]: r for r in json.loads(out.read_text())["runs"]}
    assert list(runs) == ["dense", "sheared", "random-masks", "random-init"]
    arms = [runs[k] for k in ("sheared", "random-masks", "random-init")]
    assert len({r["metrics"]["size"]["params_total"] for r in arms}) == 1
    assert {r["outcome"]["details"]["training_tokens"] for r in arms} == {3 * 2 * 64}
    assert runs["sheared"]["metrics"]["speed"]["decode_tokens_per_s"] > 0
    assert all(r["metrics"]["probe"] is not None for r in arms)
