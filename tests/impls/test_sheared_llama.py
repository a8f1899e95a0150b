"""Sheared LLaMA on `random-llama`: the exact target shape, equal post-prune steps across arms, upstream's
optimiser and lr schedule, the shape the masks reach, the warning on small folded mask values, a saved model."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from kb.errors import KBError
from reference_impls import sheared_llama as S
from reference_impls.harness.contract import Context
from reference_impls.harness.models import random_llama
from reference_impls.primitives import groups as G

SHORT = {"mask_steps": 3, "mask_batch_size": 2, "train_steps": 2, "batch_size": 2}


def _shape(model):
    _heads, kv = G.attention_widths(model, 0)
    return {"layers": len(model.model.layers), "kv": kv, "intermediate": G.mlp_width(model, 0),
            "hidden": int(model.config.hidden_size)}  # fmt: skip


def test_default_target_is_the_stories42m_fraction_of_the_model():
    model = random_llama(seed=0, layers=4)  # 4 layers, 2 KV groups, MLP 128, hidden 64
    # 30 -> 24 layers, 3 -> 2 KV groups, MLP 1536 -> 1024, hidden 576 -> 448 as fractions of this model
    assert S.target_shape(model, S.Config()) == {"layers": 3, "kv": 1, "intermediate": 85, "hidden": 50}
    given = S.Config(target_layers=3, target_kv_heads=2, target_intermediate=64, target_hidden=48)
    assert S.target_shape(model, given) == {"layers": 3, "kv": 2, "intermediate": 64, "hidden": 48}
    with pytest.raises(KBError, match="exceeds"):
        S.target_shape(model, S.Config(target_hidden=65))
    with pytest.raises(KBError, match="nothing to prune"):
        S.target_shape(
            model, S.Config(target_layers=4, target_kv_heads=2, target_intermediate=128, target_hidden=64)
        )


@pytest.mark.parametrize("init", ["learned", "random-masks", "random-init"])
def test_every_arm_ends_at_the_target_shape_after_the_same_post_prune_steps(calib_ids, init):
    model = random_llama(seed=0, layers=4)
    config = S.Config(
        init=init, target_layers=2, target_kv_heads=1, target_intermediate=96, target_hidden=48, **SHORT
    )
    out = S.prune(model, calib_ids, config, Context())
    assert _shape(model) == {"layers": 2, "kv": 1, "intermediate": 96, "hidden": 48}
    # every arm continues for train_steps; only the learned arm has mask-learning steps before pruning
    assert out.details["post_prune_steps"] == out.details["continued_training"]["steps"] == 2
    mask_steps = 3 if init == "learned" else 0
    assert out.details["training_tokens"] == (mask_steps + 2) * 2 * 64
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
    else:
        assert "mask_learning" not in out.details and "reached_shape" not in out.details


def test_the_arms_step_counts_are_one_config_default():
    """The continued-training steps of every arm are the same `Config` field; the arms set only `init`."""
    defaults = S.Config()
    assert {S.Config(init=i).train_steps for i in ("learned", "random-masks", "random-init")} == {
        defaults.train_steps
    }
    assert (defaults.mask_steps, defaults.mask_batch_size, defaults.train_steps, defaults.batch_size) == (
        200,
        1,
        20,
        4,
    )


def test_the_schedule_warms_up_linearly_then_decays_by_cosine_to_a_tenth():
    # 20 steps, 10% warm-up: steps 0 and 1 warm up, step 2 is the peak, step 11 the cosine's midpoint
    scales = [S.lr_scale(i, 20, 0.1, 0.1) for i in range(20)]
    assert scales[0] == 0.0 and scales[1] == 0.5 and scales[2] == 1.0
    assert scales[11] == pytest.approx(0.55)
    assert scales[19] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 17 / 18)))
    assert all(a >= b for a, b in itertools.pairwise(scales[2:])) and min(scales[2:]) > 0.1
    assert S.lr_scale(40, 40, 0.1, 0.1) == pytest.approx(0.1)  # the floor, where the cosine ends
    assert S.lr_scale(0, 30, 0.03, 0.1) == 0.0 and S.lr_scale(1, 30, 0.03, 0.1) == 1.0  # 3%: one warm-up step


def test_every_parameter_group_follows_the_schedule_with_upstreams_optimiser(calib_ids, monkeypatch):
    seen: list[dict[str, object]] = []
    real = S.adamw

    def spy(groups, lr, **options):
        opt = real(groups, lr, **options)
        step = opt.step

        def recording(*args, **kwargs):  # what the optimiser holds when it steps
            groups = opt.param_groups
            grads = torch.cat([p.grad.flatten() for g in groups for p in g["params"] if p.grad is not None])
            seen.append({"lrs": [g["lr"] for g in groups], "norm": float(grads.norm()),
                         "betas": [g["betas"] for g in groups], "maximize": [g["maximize"] for g in groups]})  # fmt: skip
            return step(*args, **kwargs)

        opt.step = recording
        return opt

    monkeypatch.setattr(S, "adamw", spy)
    config = S.Config(mask_steps=10, train_steps=5, batch_size=2, lr=1e-3, mask_lr=0.5, clip=0.05)
    out = S.prune(random_llama(seed=0, layers=4), calib_ids, config, Context())
    assert len(seen) == 15
    for i, rec in enumerate(seen[:10]):  # model, log-alpha, multipliers: one schedule, warm-up 1 of 10 steps
        s = S.lr_scale(i, 10, 0.1, 0.1)
        assert rec["lrs"] == pytest.approx([1e-3 * s, 0.5 * s, 0.5 * s], abs=0, rel=1e-12)
        assert rec["betas"] == [(0.9, 0.95)] * 3 and rec["maximize"] == [False, False, True]
    for i, rec in enumerate(seen[10:]):  # continued training: 3% of 5 steps rounds to no warm-up
        assert rec["lrs"] == pytest.approx([1e-3 * S.lr_scale(i, 5, 0.03, 0.1)], abs=0, rel=1e-12)
    assert seen[0]["lrs"] == [0.0, 0.0, 0.0] and seen[10]["lrs"] == [1e-3]
    assert all(rec["norm"] <= 0.05 * (1 + 1e-4) for rec in seen)  # clipped over everything trained
    assert out.details["mask_learning"]["lr_max"] == pytest.approx(1e-3)
    assert out.details["continued_training"]["lr_last"] == pytest.approx(1e-3 * S.lr_scale(4, 5, 0.03, 0.1))


def test_the_reached_shape_is_reported_and_equals_the_target_given_enough_steps(calib_ids):
    target = {"target_layers": 3, "target_kv_heads": 1, "target_intermediate": 96, "target_hidden": 48}
    shape = {"layers": 3, "kv": 1, "intermediate": 96, "hidden": 48}
    enough = S.prune(random_llama(seed=0, layers=4), calib_ids, S.Config(**target, batch_size=2), Context())
    assert (enough.details["mask_learning"]["steps"], enough.details["mask_learning"]["batch_size"]) == (
        200,
        1,
    )
    assert enough.details["reached_shape"] == shape and enough.details["reached_target"] is True
    few = S.prune(random_llama(seed=0, layers=4), calib_ids,
                  S.Config(**target, mask_steps=4, batch_size=2), Context())  # fmt: skip
    assert few.details["reached_shape"] != shape and few.details["reached_target"] is False
    assert few.details["reached_shape"]["intermediate"] > 96  # four steps barely move the masks


def test_kept_mask_values_far_below_one_are_warned_about(calib_ids, monkeypatch):
    values = {
        "heads": torch.tensor([[0.3, 0.0], [0.0, 0.9], [0.8, 0.0], [0.0, 0.2]]),  # layer 3 goes: not counted
        "intermediate": torch.cat([torch.full((4, 96), 0.7), torch.zeros(4, 32)], dim=1),
        "layers": torch.tensor([0.45, 1.0, 0.6, 0.0]),
        "hidden": torch.cat([torch.ones(48), torch.zeros(16)]),
    }
    assert S.low_folds(values) == {"heads": {"below": 1, "kept": 3, "min": 0.3},
                                   "layers": {"below": 1, "kept": 3, "min": 0.45}}  # fmt: skip
    assert S.low_folds({**values, "heads": values["heads"].clamp(min=0.5) * (values["heads"] != 0),
                        "layers": torch.tensor([1.0, 1.0, 0.6, 0.0])}) == {}  # fmt: skip
    shape = {"layers": 3, "kv": 1, "intermediate": 96, "hidden": 48}
    monkeypatch.setattr(S, "learned_values", lambda *a: ({k: v.clone() for k, v in values.items()},
                                                         {"reached_shape": shape}))  # fmt: skip
    logged: list[str] = []
    config = S.Config(
        target_layers=3, target_kv_heads=1, target_intermediate=96, target_hidden=48, train_steps=0
    )
    out = S.prune(random_llama(seed=0, layers=4), calib_ids, config, Context(log=logged.append))
    assert out.details["fold_warning"] == S.low_folds(values)
    assert any("warning" in m and "heads: 1 of 3, min 0.3" in m for m in logged)
    assert out.details["final_shape"]["layers"] == 3


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
    assert got["layers"] == 2 and len(got["tokens"]) == 8 + 6  # 2 layers x 24/30 rounds to 2


def test_kb_reproduce_records_three_arms_of_one_shape_and_equal_post_prune_steps(tmp_path, capsys):
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
    assert {r["outcome"]["details"]["post_prune_steps"] for r in arms} == {1}
    # the learned arm's 2 mask steps of one window come on top of the step of 2 windows every arm has
    assert [r["outcome"]["details"]["training_tokens"] for r in arms] == [4 * 64, 2 * 64, 2 * 64]
    assert runs["sheared"]["metrics"]["speed"]["decode_tokens_per_s"] > 0
    assert all(r["metrics"]["probe"] is not None for r in arms)
