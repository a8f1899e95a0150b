"""K-prune on `random-llama`: FLOPs counts, the mask search, the least-squares re-solve (ridge toward the original
weights), the identical-mask ablation and the whole pass."""

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


def _sublayer_case(kind):
    """A random 2-layer model, the re-solve windows' stream entering sublayer (0, kind), and units to drop."""
    from reference_impls.harness.layerwise import capture_layer_inputs

    model = random_llama(seed=0, layers=2)
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 256, (8, 64), generator=gen)
    with torch.no_grad():
        (inputs,) = capture_layer_inputs(model, ids, 8)
        hidden = inputs.hidden  # (8, 64, 64)
        if kind == "mlp":  # the MLP sublayer reads the stream after the (untouched) attention
            hidden = kp.run_sublayer(model.model.layers[0], "attn", hidden, inputs.kwargs)
    family = kp.family_of(model, kp.Sublayer(0, kind))
    removed = [1] if kind == "attn" else list(range(0, 128, 4))  # one of 2 KV groups / 32 of 128 channels
    return model, family, removed, hidden, inputs.kwargs


@pytest.mark.parametrize("kind", ["attn", "mlp"])
def test_the_resolve_lowers_the_sublayer_error_against_keeping_the_original_weights(kind):
    """On the re-solve windows, the stream after the pruned sublayer is closer to the dense one with the
    re-solved projection than with the original weights of the kept channels (same mask), by a margin; the
    plain problem (damp 0) fits at least as well as the default ridge."""
    errors = {}
    for damp in (kp.Config().damp, 0.0):
        model, family, removed, hidden, kwargs = _sublayer_case(kind)
        sub = kp.Sublayer(0, kind)
        state = kp.Resolve(hidden, hidden.clone(), kwargs)
        with torch.no_grad():
            original = kp._reconstruct(model, sub, family, removed, state, damp)
            after, dense_next = state.current, state.dense
            feats = kp.sublayer_features(model, sub, hidden, kwargs)  # compacted: kept channels only
            plain = hidden + torch.nn.functional.linear(feats, original)
        assert original.shape[1] == feats.shape[-1] == (32 if kind == "attn" else 96)
        errors[damp] = float((after - dense_next).square().sum()), float((plain - dense_next).square().sum())
    resolved, plain_error = errors[kp.Config().damp]
    assert resolved < 0.75 * plain_error  # measured: 0.34 (attention), 0.58 (MLP)
    assert errors[0.0][0] <= resolved * (1 + 1e-5) and errors[0.0][1] == pytest.approx(plain_error)


def test_the_ridge_pulls_toward_the_prior_and_solves_the_penalised_problem():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 12, generator=gen)
    y = torch.randn(40, 5, generator=gen)
    prior = torch.randn(5, 12, generator=gen)
    damp = 0.3
    w = least_squares_weight(x, y, damp, prior=prior).double()
    x64, y64, p64 = x.double(), y.double(), prior.double()
    lam = damp * float((x64.T @ x64).diagonal().mean())
    # the gradient of ||x W^T - y||^2 + lam ||W - prior||^2 vanishes at the solution
    grad = x64.T @ (x64 @ w.T - y64) + lam * (w - p64).T
    assert float(grad.abs().max()) < 1e-3
    assert reconstruction_error(x, w, y) < reconstruction_error(x, prior, y)  # never worse than the prior
    far = least_squares_weight(x, y, 1e6, prior=prior)
    torch.testing.assert_close(far, prior, atol=1e-4, rtol=1e-4)  # a huge ridge keeps the prior
    torch.testing.assert_close(least_squares_weight(x, y, 0.0, prior=prior), least_squares_weight(x, y))


def _kept_rows(pruned: torch.Tensor, dense: torch.Tensor) -> list[int]:
    """Which rows of `dense` the compacted `pruned` kept (rows are copied, never changed)."""
    match = (pruned[:, None, :] == dense[None, :, :]).all(-1)  # (pruned rows, dense rows)
    assert bool((match.sum(1) == 1).all())
    return match.float().argmax(1).tolist()


def test_the_identical_mask_ablation_differs_from_k_prune_only_in_the_resolved_values(calib_ids):
    """`masks_only` keeps exactly K-prune's units (same digest, same shapes, every other tensor equal) and puts
    back the dense weights of the kept channels; K-prune's o_proj / down_proj differ from those."""
    dense = random_llama(seed=0, layers=3)
    base = {"score_examples": 1, "recon_examples": 8, "example_len": 64}
    models, details = {}, {}
    for label, extra in (("k-prune", {}), ("same-masks", {"masks_only": True})):
        models[label] = copy.deepcopy(dense)
        details[label] = kp.prune(models[label], calib_ids, kp.Config(**base, **extra), Context()).details
    k, same = details["k-prune"], details["same-masks"]
    assert k["mask_digest"] == same["mask_digest"] and k["weights_resolved"] and not same["weights_resolved"]
    assert k["reconstruction_tokens"] == same["reconstruction_tokens"] == 8 * 64
    tuned, plain = dict(models["k-prune"].named_parameters()), dict(models["same-masks"].named_parameters())
    assert {n: p.shape for n, p in tuned.items()} == {n: p.shape for n, p in plain.items()}
    projections = [n for n in tuned if n.endswith(("o_proj.weight", "down_proj.weight"))]
    assert all(torch.equal(tuned[n], plain[n]) for n in tuned if n not in projections)
    d = dict(dense.named_parameters())
    for i in range(3):
        p = f"model.layers.{i}"
        groups = sorted({r // 16 for r in _kept_rows(plain[f"{p}.self_attn.k_proj.weight"],
                                                     d[f"{p}.self_attn.k_proj.weight"])})  # fmt: skip
        cols = [g * 32 + j for g in groups for j in range(32)]  # a KV group: 2 query heads x 16 columns
        channels = _kept_rows(plain[f"{p}.mlp.gate_proj.weight"], d[f"{p}.mlp.gate_proj.weight"])
        for name, kept in ((f"{p}.self_attn.o_proj.weight", cols), (f"{p}.mlp.down_proj.weight", channels)):
            assert torch.equal(plain[name], d[name][:, kept])  # the original weights of the kept channels
            assert not torch.allclose(tuned[name], plain[name])  # K-prune re-solved them


def test_the_details_record_the_resolve_budget_and_a_short_calibration_is_logged(calib_ids):
    logged: list[str] = []
    out = kp.prune(
        random_llama(seed=0, layers=2), calib_ids, kp.Config(example_len=64), Context(log=logged.append)
    )
    d = out.details
    assert d["reconstruction_damp"] == kp.Config().damp == 1e-2 and kp.Config().recon_examples == 160
    assert (
        d["reconstruction_tokens"] == 8 * 64 and d["reconstruction_ridge_toward"] == "original kept weights"
    )
    widest = max(*d["mlp_channels_per_layer"], *(32 * g for g in d["kv_groups_per_layer"]))  # in-channels
    assert d["reconstruction_tokens_per_unknown"] == round(8 * 64 / widest, 1)
    assert any("asked for 160 windows" in line and "512 tokens" in line for line in logged)
    plain = kp.prune(random_llama(seed=0, layers=2), calib_ids, kp.Config(example_len=64, reconstruct=False),
                     Context(log=logged.append)).details  # fmt: skip
    assert plain["reconstruction_tokens"] == 0 and plain["reconstruction_tokens_per_unknown"] is None
    with pytest.raises(ValueError, match="masks_only"):
        kp.Config(reconstruct=False, masks_only=True)


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
