"""LoRAPrune on `random-llama`: the LoRA gradient estimate, scores, schedule, masks, memory and the saved model."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from savedmodels import fresh_process, greedy

from reference_impls import loraprune as lp
from reference_impls.harness.contract import Context
from reference_impls.harness.models import random_llama
from reference_impls.harness.recovery import Budget, LoRALinear, lora_steps
from reference_impls.primitives import groups as G


def test_lora_gradient_estimate_is_the_change_of_ba_under_one_unit_step():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 10, generator=gen), torch.randn(6, 4, generator=gen)
    ga, gb = torch.randn(4, 10, generator=gen), torch.randn(6, 4, generator=gen)
    expected = b @ a - (b - gb) @ (a - ga)
    torch.testing.assert_close(lp.lora_grad_estimate(a, b, ga, gb), expected, atol=1e-6, rtol=1e-6)


def test_lora_gradients_are_projections_of_the_true_gradient():
    torch.manual_seed(0)
    layer = LoRALinear(torch.nn.Linear(10, 6, bias=False), rank=3, alpha=6.0)
    with torch.no_grad():
        layer.lora_b.normal_()
    x = torch.randn(5, 10)
    (layer(x) ** 2).sum().backward()
    w_eff = (layer.base.weight + layer.lora_b @ layer.lora_a * layer.scale).detach().requires_grad_(True)
    ((x @ w_eff.T) ** 2).sum().backward()
    g = w_eff.grad
    torch.testing.assert_close(layer.lora_b.grad, layer.scale * g @ layer.lora_a.T, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.lora_a.grad, layer.scale * layer.lora_b.T @ g, atol=1e-5, rtol=1e-5)


def test_scores_normalise_each_matrix_and_average_over_steps():
    parts = [torch.tensor([3.0, 4.0]), torch.tensor([0.0, 2.0])]
    torch.testing.assert_close(lp.combine_members(parts, normalize=True), torch.tensor([0.6, 1.8]))
    torch.testing.assert_close(lp.combine_members(parts, normalize=False), torch.tensor([3.0, 6.0]))
    s1, s2 = torch.tensor([1.0, 2.0]), torch.tensor([4.0, 0.0])
    state = lp.update_ema(lp.update_ema(None, s1, 0.9), s2, 0.9)
    assert state is not None
    torch.testing.assert_close(state, 0.09 * s1 + 0.1 * s2)
    assert lp.update_ema(state, torch.tensor([float("nan"), 1.0]), 0.9) is state
    w, g = torch.tensor([[-2.0, 1.0]]), torch.tensor([[0.5, -3.0]])
    assert lp.element_scores(g, w, "code").tolist() == [[1.0, 3.0]]
    assert lp.element_scores(g, w, "paper").tolist() == [[1.0, 9.0]]
    assert lp.element_scores(None, w, "code").tolist() == [[2.0, 1.0]]


def test_cubic_schedule_holds_then_ramps_monotonically_to_the_target():
    values = [lp.cubic_ratio(t, 100, 0.0, 0.5) for t in range(101)]
    assert values[:11] == [0.0] * 11 and values[91:] == [0.5] * 10
    assert all(a <= b for a, b in itertools.pairwise(values))
    assert lp.cubic_ratio(50, 100, 0.0, 0.5) == pytest.approx(0.5 - 0.5 * (1 - 40 / 80) ** 3)


def test_masks_only_shrink_even_with_tied_zero_scores():
    keep = torch.tensor([True, False, True, True, True])
    out = lp.shrink_mask(keep, torch.zeros(5), 3)
    assert not out[1] and int((~out).sum()) == 3
    again = lp.shrink_mask(out, torch.tensor([9.0, -1.0, 9.0, 9.0, 9.0]), 3)
    assert torch.equal(again, out)
    assert lp.prunable_layers(32, None, 1) == list(range(3, 31))  # LLaMA-7B: layers 0-2 and 31 kept
    assert lp.prunable_layers(30, None, 1) == list(range(3, 29))  # SmolLM2


def _config(**kw):
    base = {"ratio": 0.5, "steps": 5, "batch": 2, "prune_freq": 1, "lr": 1e-3, "keep_first": 1}
    return lp.Config(**{**base, **kw})


def test_prune_removes_the_final_share_in_the_prunable_layers_only(calib_ids):
    dense = random_llama(seed=0, layers=4)
    model = copy.deepcopy(dense)
    out = lp.prune(model, calib_ids, _config(criterion="magnitude"), Context())
    assert out.details["pruned_layers"] == [1, 2]
    for i in range(4):
        heads, kv = G.attention_widths(model, i)
        if i in (1, 2):
            assert (heads, kv, G.mlp_width(model, i)) == (
                2,
                1,
                64,
            )  # half of 2 KV groups, half of 128 channels
        else:
            assert (heads, kv, G.mlp_width(model, i)) == (4, 2, 128)
    assert out.details["prune_events"] and all(e["ratio"] < 0.5 for e in out.details["prune_events"])
    removed = sum(p.numel() for p in dense.parameters()) - sum(p.numel() for p in model.parameters())
    assert removed == out.details["params_before"] - out.details["params_after"]


def test_lora_criterion_never_holds_base_weight_gradients(calib_ids):
    lora, grad = random_llama(seed=0, layers=4), random_llama(seed=0, layers=4)
    a = lp.prune(lora, calib_ids, _config(criterion="lora"), Context())
    b = lp.prune(grad, calib_ids, _config(criterion="grad"), Context())
    # LoRA mode: the only gradients are those of A and B (float32), rank 8 on the 7 linears of 4 layers
    trainable = a.details["trainable_params"]
    assert trainable == 4 * 8 * ((64 + 64) * 2 + (64 + 32) * 2 + (64 + 128) * 2 + (128 + 64))
    assert a.details["grad_bytes_peak"] == 4 * trainable
    # grad mode also holds the gradient of every base weight a prunable group touches (layers 1 and 2)
    base = 2 * (64 * 64 * 2 + 32 * 64 * 2 + 128 * 64 * 3)
    assert b.details["grad_bytes_peak"] == 4 * (trainable + base)
    assert all(p.grad is None for p in lora.parameters()) and all(p.grad is None for p in grad.parameters())
    assert sum(p.numel() for p in lora.parameters()) == sum(p.numel() for p in grad.parameters())


def test_ratio_zero_is_plain_lora_training(calib_ids):
    pruned, plain = random_llama(seed=0, layers=2), random_llama(seed=0, layers=2)
    out = lp.prune(
        pruned, calib_ids, lp.Config(ratio=0.0, steps=3, batch=2, lr=1e-3, keep_first=0), Context()
    )
    assert out.shapes == {} and out.details["prune_events"] == []
    lora_steps(plain, calib_ids, Budget(3, 2), lr=1e-3, rank=8, alpha=16.0, dropout=0.05, seed=0)
    for (name, p), q in zip(pruned.named_parameters(), plain.parameters(), strict=True):
        assert torch.equal(p, q), name


def test_masked_units_are_inert_during_training(calib_ids):
    model = random_llama(seed=0, layers=2)
    from reference_impls.harness.recovery import add_lora

    add_lora(model, 8, 16.0)  # families are built on the plain model, as `prune` does before wrapping
    plain = random_llama(seed=0, layers=2)
    fam = G.mlp_family(plain, 0)
    pruner = lp.MaskedPruner(model, [fam], lp.Config(ratio=0.5))
    pruner.keep[fam][:64] = False
    with torch.inference_mode():
        before = model(calib_ids[:2]).logits
        model.model.layers[0].mlp.up_proj.base.weight[:64] += 5.0
        model.model.layers[0].mlp.up_proj.lora_b[:64] += 1.0
        after = model(calib_ids[:2]).logits
    pruner.remove_hooks()
    torch.testing.assert_close(before, after)


def test_kb_prune_saves_a_model_that_loads_and_generates_in_a_fresh_process(tmp_path, capsys):
    from kb_cli.main import main
    from reference_impls.harness.models import load_model

    save = tmp_path / "pruned"
    args = ["--model", "random-llama", "--nsamples", "8", "--seqlen", "64", "--eval-tokens", "256"]
    sets = ["--set", "steps=3", "--set", "keep_first=0", "--set", "prune_freq=1"]
    assert main(["prune", "loraprune", *args, *sets, "--save", str(save)]) == 0
    capsys.readouterr()
    loaded = load_model(str(save), "cpu").model
    assert G.mlp_width(loaded, 0) == 64 and G.mlp_width(loaded, 1) == 128  # the last layer is never pruned
    result = fresh_process(save, tmp_path, remote=True)
    assert result["tokens"] == greedy(loaded)[0].tolist()
    assert result["params"] == sum(p.numel() for p in loaded.parameters())


def test_kb_reproduce_reads_the_memory_of_both_arms(tmp_path, capsys):
    import json

    from kb_cli.main import main

    out = tmp_path / "r.json"
    args = ["--model", "random-llama", "--nsamples", "8", "--seqlen", "32", "--eval-tokens", "128"]
    rc = main(["reproduce", "loraprune", *args, "--probe-items", "10", "--json", str(out)])
    assert rc in (0, 1)
    record = json.loads(out.read_text())
    runs = {r["label"]: r for r in record["runs"]}
    assert list(runs) == ["dense", "lora", "grad"]
    lora, grad = (runs[k]["outcome"]["details"] for k in ("lora", "grad"))
    assert lora["grad_bytes_peak"] < grad["grad_bytes_peak"]
    assert lora["training"]["steps"] == 12 and lora["training"]["tokens"] == 12 * 2 * 32
    assert "rss_peak_increase_bytes" in lora
    assert runs["lora"]["metrics"]["size"]["params_total"] == runs["grad"]["metrics"]["size"]["params_total"]
    assert runs["grad"]["metrics"]["speed"]["decode_speedup"] > 0
    assert "gradient tensors held" in record["claim"]["reason"]
    capsys.readouterr()
