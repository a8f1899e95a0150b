"""K-prune on `random-llama`: FLOPs counts, the mask search, the least-squares re-solve and the whole pass."""

from __future__ import annotations

import copy

import pytest
import torch
from savedmodels import fresh_process, greedy

from reference_impls import k_prune as kp
from reference_impls.harness.contract import Context
from reference_impls.harness.models import random_llama
from reference_impls.primitives import groups as G
from reference_impls.primitives.flops import prunable_flops, unit_flops
from reference_impls.primitives.reconstruct import least_squares_weight, reconstruction_error


def test_unit_flops_count_projections_and_causal_attention():
    model = random_llama(seed=0, layers=2)  # hidden 64, 4 query heads / 2 KV heads of 16, MLP 128
    kv = G.kv_head_family(model, 0)
    # a KV group: 2 query heads (q rows and o columns: 2 x 2 x 16 x 64) + its k and v rows (2 x 16 x 64),
    # 2 FLOPs per weight, plus 2 x head_dim x (seq + 1) per query head for the two attention products
    assert unit_flops(model, kv, 63) == 2 * (4 * 16 * 64 + 2 * 16 * 64) + 2 * 2 * 16 * 64
    assert unit_flops(model, G.mlp_family(model, 0), 63) == 2 * 3 * 64
    assert prunable_flops(model, 63) == 2 * (2 * unit_flops(model, kv, 63) + 128 * 2 * 3 * 64)


def test_mask_search_meets_the_budget_with_the_fewest_removals_and_keeps_a_unit_everywhere():
    scores = [torch.tensor([5.0, 1.0, 3.0]), torch.tensor([0.5, 0.2, 4.0, 0.1])]
    flops = [10.0, 2.0]
    keep = kp.mask_search(scores, flops, budget=30.0)  # total 38: drop 0.1, 0.2, 0.5 (6), then 1.0 (10)
    assert keep[0].tolist() == [True, False, True] and keep[1].tolist() == [False, False, True, False]
    assert kp.mask_search(scores, flops, budget=38.0)[1].all()  # within budget already: nothing goes
    tight = kp.mask_search(scores, flops, budget=0.0)
    assert [int(k.sum()) for k in tight] == [1, 1] and bool(tight[0][0]) and bool(tight[1][2])


def test_least_squares_never_does_worse_than_the_kept_columns_of_the_old_weight():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 12, generator=gen)
    w = torch.randn(5, 12, generator=gen)
    y = x @ w.T
    kept = torch.tensor([0, 2, 3, 5, 7, 8, 11])
    new = least_squares_weight(x[:, kept], y)
    assert reconstruction_error(x[:, kept], new, y) <= reconstruction_error(x[:, kept], w[:, kept], y)
    torch.testing.assert_close(least_squares_weight(x, y), w, atol=1e-4, rtol=1e-4)  # nothing removed: exact


@pytest.mark.parametrize("rescore_every", [1, 2])
def test_prune_meets_the_flops_budget_and_reports_the_widths(calib_ids, rescore_every):
    dense = random_llama(seed=0, layers=4)
    model = copy.deepcopy(dense)
    cfg = kp.Config(score_examples=2, recon_examples=8, example_len=64, rescore_every=rescore_every)
    out = kp.prune(model, calib_ids, cfg, Context())
    d = out.details
    budget = 0.75 * d["prunable_flops_per_token_before"]
    assert d["prunable_flops_per_token_after"] <= budget
    biggest = unit_flops(dense, G.kv_head_family(dense, 0), 64)
    assert d["prunable_flops_per_token_after"] > budget - biggest  # stopped at the first removal that fits
    assert d["prunable_flops_per_token_after"] == prunable_flops(model, 64)
    assert d["kv_groups_per_layer"] == [G.attention_widths(model, i)[1] for i in range(4)]
    assert d["mlp_channels_per_layer"] == [G.mlp_width(model, i) for i in range(4)]
    assert d["params_after"] == sum(p.numel() for p in model.parameters())


def test_reconstruction_changes_only_the_output_projections(calib_ids):
    cfg = {"score_examples": 2, "recon_examples": 8, "example_len": 64, "importance": "magnitude"}
    plain, tuned = random_llama(seed=0, layers=2), random_llama(seed=0, layers=2)
    kp.prune(plain, calib_ids, kp.Config(**cfg, reconstruct=False), Context())
    kp.prune(tuned, calib_ids, kp.Config(**cfg, reconstruct=True), Context())
    changed = {
        n
        for (n, p), q in zip(plain.named_parameters(), tuned.parameters(), strict=True)
        if not torch.equal(p, q)
    }
    assert changed and all(n.endswith(("o_proj.weight", "down_proj.weight")) for n in changed)


def test_first_sublayer_reconstruction_matches_the_dense_output_best(calib_ids):
    """After the first sublayer, the re-solved o_proj reproduces the dense residual stream at least as well as
    the pruned o_proj without the re-solve (on the reconstruction tokens)."""
    from reference_impls.harness.layerwise import capture_layer_inputs

    dense = random_llama(seed=0, layers=2)
    ids = calib_ids[:8, :64]
    with torch.no_grad():
        (inputs,) = capture_layer_inputs(dense, ids, 8)
        target = kp.run_sublayer(dense.model.layers[0], "attn", inputs.hidden, inputs.kwargs)
    errors = []
    for reconstruct in (False, True):
        model = copy.deepcopy(dense)
        fam = G.kv_head_family(model, 0)
        feats = kp.sublayer_features(model, kp.Sublayer(0, "attn"), inputs.hidden, inputs.kwargs)
        G.compact(model, {fam: [1]})
        proj = model.model.layers[0].self_attn.o_proj
        if reconstruct:
            keep = torch.tensor([True, False])
            kept = kp._kept_channels(2, 32, keep)
            with torch.no_grad():
                proj.weight.copy_(least_squares_weight(feats[..., kept], target - inputs.hidden))
        with torch.no_grad():
            out = kp.run_sublayer(model.model.layers[0], "attn", inputs.hidden, inputs.kwargs)
        errors.append(float((out - target).square().sum()))
    assert errors[1] <= errors[0]


def test_kb_prune_saves_a_model_that_loads_and_generates_in_a_fresh_process(tmp_path, capsys):
    from kb_cli.main import main
    from reference_impls.harness.models import load_model

    save = tmp_path / "pruned"
    args = ["--model", "random-llama", "--nsamples", "8", "--seqlen", "64", "--eval-tokens", "256"]
    assert main(["prune", "k-prune", *args, "--set", "score_examples=1", "--save", str(save)]) == 0
    capsys.readouterr()
    loaded = load_model(str(save), "cpu").model
    result = fresh_process(save, tmp_path, remote=True)
    assert result["tokens"] == greedy(loaded)[0].tolist()
    assert (
        result["params"]
        == sum(p.numel() for p in loaded.parameters())
        < sum(p.numel() for p in random_llama().parameters())
    )
