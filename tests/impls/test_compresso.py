"""Compresso on `random-llama`: frozen base during mask learning, exact global counts, equal sizes and tokens."""

from __future__ import annotations

import math

import pytest
import torch

from kb.errors import KBError
from reference_impls import compresso as C
from reference_impls.harness.contract import Context
from reference_impls.harness.models import random_llama
from reference_impls.primitives import groups as G
from reference_impls.primitives import l0

SHORT = {"mask_steps": 3, "max_mask_steps": 3, "finetune_steps": 2, "batch_size": 2, "target_sparsity": 0.25}


def test_global_lowest_takes_the_k_lowest_but_never_a_whole_family():
    model = random_llama(seed=0, layers=2)
    a, b = G.kv_head_family(model, 0), G.kv_head_family(model, 1)
    got = C.global_lowest({a: torch.tensor([0.1, 0.2]), b: torch.tensor([0.3, 0.05])}, 2)
    assert got == {a: [0], b: [1]}
    got = C.global_lowest({a: torch.tensor([0.1, 0.2]), b: torch.tensor([0.3, 0.4])}, 2)
    assert got == {a: [0], b: [0]}  # a's second unit would empty it


def test_equal_scores_are_ordered_by_a_seeded_draw_not_by_position():
    model = random_llama(seed=0, layers=4)
    fams = [G.mlp_family(model, i) for i in range(4)]  # 128 channels each
    tied = {f: torch.zeros(128) for f in fams}
    got = C.global_lowest(tied, 128, seed=0)
    assert sum(len(v) for v in got.values()) == 128
    assert all(len(v) < 128 for v in got.values())  # not the first family, nor any one family, whole
    assert got[fams[0]] != list(range(len(got[fams[0]])))  # nor the first indices of a family
    assert got == C.global_lowest(tied, 128, seed=0) and got != C.global_lowest(tied, 128, seed=1)
    assert C.tie_broken(tied, got) == 128  # every removal was the draw's
    scores = {f: torch.arange(128.0) + 128 * i for i, f in enumerate(fams)}
    assert C.global_lowest(scores, 128) == {fams[0]: list(range(127)), fams[1]: [0], fams[2]: [], fams[3]: []}
    assert C.tie_broken(scores, C.global_lowest(scores, 128)) == 0


def test_initial_masks_are_not_tied():
    """Channels start at log(0.99 / 0.01) + N(0, 0.01) (upstream), mostly under the clamp log 100 = 4.605, so
    the first clamp leaves them distinct (about one in six draws lands above it and ties there, as upstream);
    Compresso's old init 5 (the shared default, LLM-Shearing's) ties every one of them."""
    model = random_llama(seed=0, layers=4)
    masks = C.initial_masks(model, C.Config())
    masks.constrain()
    channels = masks.masks["intermediate"].log_alpha.detach().reshape(-1)
    top = l0.LOG_ALPHA_RANGE[1]
    below = channels[channels < top]
    assert below.numel() >= 0.75 * channels.numel()
    # distinct but for float32 coincidences (~5e-7 apart near 4.6): those fall to the seeded tie-break
    assert below.unique().numel() >= 0.99 * below.numel()
    assert abs(float(channels.mean()) - 4.595) < 0.005
    heads = masks.masks["heads"].log_alpha.detach()
    assert torch.all(heads == top)  # heads start at 10, at the clamp, as upstream
    shared = l0.StructureMasks.for_model(model, ("intermediate",), seed=0)
    shared.constrain()
    assert torch.all(shared.masks["intermediate"].log_alpha == top)  # what Compresso started from before


def test_mask_learning_reaches_the_target_within_epsilon(calib_ids):
    model = random_llama(seed=0, layers=4)
    out = C.prune(model, calib_ids, C.Config(target_sparsity=0.25, finetune_steps=2, batch_size=2), Context())
    d = out.details
    assert d["sparsity_reached"] is True and abs(d["sparsity_gap"]) <= 0.005
    assert abs(d["expected_sparsity_end"] - 0.25) <= 0.005
    steps = d["mask_learning"]["steps"]
    assert 40 <= steps < 140  # at least mask_steps, stopped once within epsilon, before the cap
    assert d["finetune"]["steps"] == 140 - steps + 2  # the steps left under the cap fine-tune
    assert d["training_tokens"] == (140 + 2) * 2 * 64


def test_an_unreached_target_is_reported_with_its_gap(calib_ids):
    model = random_llama(seed=0, layers=2)
    config = C.Config(target_sparsity=0.5, mask_steps=2, max_mask_steps=2, finetune_steps=0, batch_size=2)
    d = C.prune(model, calib_ids, config, Context()).details
    assert d["sparsity_reached"] is False and d["mask_learning"]["steps"] == 2
    assert (
        d["sparsity_gap"] == pytest.approx(d["expected_sparsity_end"] - 0.5, abs=1e-4)
        and d["sparsity_gap"] < -0.005
    )


def test_learned_cut_follows_the_units_that_matter_not_layer_order(calib_ids):
    """MLPs of the LAST two layers write nothing (down_proj zero): their channels get no LM gradient, only the
    budget's pull, so the learned masks cut there rather than in the first layers, and spread the cut over
    both dead layers (equally useless) instead of emptying the first of them in order. The old init (every
    channel tied at the clamp, ties broken by position) removed 119 channels from layer 2 and none from 3."""
    model = random_llama(seed=0, layers=4)
    with torch.no_grad():
        for layer in model.model.layers[2:]:
            layer.mlp.down_proj.weight.zero_()
    out = C.prune(model, calib_ids, C.Config(target_sparsity=0.25, finetune_steps=0, batch_size=2), Context())
    removed = out.details["removed_mlp_channels"]  # layer -> channels removed (128 of 512 at 25%)
    assert sum(removed.values()) == 128
    dead = removed.get("2", 0) + removed.get("3", 0)
    assert dead >= 108 and min(removed.get("2", 0), removed.get("3", 0)) >= 32, removed
    assert out.details["tie_broken_removals"] == 0  # every removal decided by a learned score


def test_finetune_lr_follows_a_half_cosine_to_zero():
    assert C.cosine_lr(4e-4, 0, 10) == 4e-4
    assert C.cosine_lr(4e-4, 5, 10) == pytest.approx(2e-4)
    assert C.cosine_lr(4e-4, 9, 10) == pytest.approx(4e-4 * 0.5 * (1 + math.cos(0.9 * math.pi)))
    assert C.cosine_lr(4e-4, 9, 10) < 1e-5
    assert C.loss_trend([4.0, 3.0, 2.0, 1.0, 1.0, 0.0, 0.0, 0.0]) == {
        "loss_mean_first_quarter": 3.5,
        "loss_mean_last_quarter": 0.0,
    }


def test_learned_masks_leave_the_base_weights_untouched_until_the_merge(calib_ids, monkeypatch):
    model = random_llama(seed=0, layers=4)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    seen = {}
    real = l0.learn_masks

    def spy(m, masks, *args, **kwargs):
        report = real(m, masks, *args, **kwargs)
        seen["base"] = {
            n: p.detach().clone() for n, p in m.named_parameters() if ".base." in n or "lora" not in n
        }
        seen["lora"] = [p.detach().clone() for n, p in m.named_parameters() if "lora_b" in n]
        seen["log_alpha"] = [x.detach().clone() for x in masks.parameters()]
        return report

    monkeypatch.setattr(l0, "learn_masks", spy)
    C.prune(model, calib_ids, C.Config(**SHORT, lr=1e-3), Context())
    for name, value in seen["base"].items():
        assert torch.equal(value, base[name.replace(".base.", ".")]), name  # only LoRA and masks moved
    assert any(float(b.abs().sum()) > 0 for b in seen["lora"])  # LoRA B starts at 0 and moved
    assert any(
        not torch.allclose(x, torch.full_like(x, l0.LOG_ALPHA_RANGE[1]), atol=0.05) for x in seen["log_alpha"]
    )


@pytest.mark.parametrize("criterion", ["l0", "magnitude", "random"])
def test_every_criterion_removes_the_same_counts_after_the_same_tokens(calib_ids, criterion):
    model = random_llama(seed=0, layers=4)  # 8 KV groups, 512 MLP channels: 25% = 2 groups, 128 channels
    out = C.prune(model, calib_ids, C.Config(criterion=criterion, **SHORT), Context())
    assert sum(G.attention_widths(model, i)[1] for i in range(4)) == 6
    assert sum(G.mlp_width(model, i) for i in range(4)) == 512 - 128
    assert out.details["training_tokens"] == (3 + 2) * 2 * 64
    removed = 2 * (2 * 2 + 2) * 16 * 64 + 128 * 3 * 64
    assert out.details["params_before"] - out.details["params_after"] == removed


def test_magnitude_removes_the_lowest_l2_groups(calib_ids):
    from reference_impls.primitives.importance import group_importance

    dense = random_llama(seed=0, layers=4)
    fams = [G.mlp_family(dense, i) for i in range(4)]
    scores = group_importance(dense, fams, "l2")
    expect = C.global_lowest(scores, 128)
    model = random_llama(seed=0, layers=4)
    C.prune(model, calib_ids, C.Config(criterion="magnitude", **{**SHORT, "mask_steps": 0, "finetune_steps": 0}),
            Context())  # fmt: skip
    for i, f in enumerate(fams):
        keep = [u for u in range(128) if u not in expect[f]]
        torch.testing.assert_close(
            model.model.layers[i].mlp.up_proj.weight, dense.model.layers[i].mlp.up_proj.weight[keep]
        )


def test_bad_input_is_one_line():
    with pytest.raises(KBError, match="removes nothing"):
        C.prune(
            random_llama(seed=0, layers=1),
            torch.zeros(2, 8, dtype=torch.long),
            C.Config(target_sparsity=0.001),
            Context(),
        )


def test_kb_prune_saves_a_model_that_loads_and_generates_in_a_fresh_process(tmp_path, capsys):
    from kb_cli.main import main
    from tests.impls.savedmodels import fresh_process

    save = tmp_path / "compresso"
    args = ["prune", "compresso", "--model", "random-llama", "--nsamples", "8", "--seqlen", "64", "--eval-tokens",
            "256", "--set", "mask_steps=2", "--set", "max_mask_steps=2", "--set", "finetune_steps=1", "--set", "batch_size=2", "--save", str(save)]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    got = fresh_process(save, tmp_path, remote=True)
    assert got["layers"] == 2 and len(got["tokens"]) == 8 + 6


def test_kb_reproduce_compares_equal_sizes_and_runs_random_only_on_request(tmp_path, capsys):
    import json

    from kb_cli.main import main

    out = tmp_path / "r.json"
    args = ["reproduce", "compresso", "--model", "random-llama", "--nsamples", "8", "--seqlen", "64",
            "--eval-tokens", "256", "--probe-items", "20", "--set", "mask_steps=2", "--set", "max_mask_steps=2", "--set", "finetune_steps=1",
            "--set", "batch_size=2", "--json", str(out)]  # fmt: skip
    assert main(args) in (0, 1)
    capsys.readouterr()
    record = json.loads(out.read_text())
    runs = {r["label"]: r for r in record["runs"]}
    assert list(runs) == ["dense", "l0-lora", "magnitude-lora"]
    sizes = {runs[k]["metrics"]["size"]["params_total"] for k in ("l0-lora", "magnitude-lora")}
    assert len(sizes) == 1 and sizes.pop() < runs["dense"]["metrics"]["size"]["params_total"]
    assert "not measurable" in record["claim"]["reason"]


def test_the_lagrangian_pulls_the_expected_sparsity_to_the_target():
    calib = torch.randint(0, 256, (8, 16), generator=torch.Generator().manual_seed(0))
    config = C.Config(mask_steps=40, finetune_steps=0, batch_size=1, mask_lr=1.0, target_sparsity=0.5)
    out = C.prune(random_llama(seed=0, layers=2), calib, config, Context())
    assert out.details["mask_learning"]["penalty_last"] is not None
    assert 0.35 < out.details["expected_sparsity_end"] < 0.65  # from ~0 (every unit on) towards 0.5
