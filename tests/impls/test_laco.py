"""LaCo: the RDSC merge and the notebook's variant, the similarity, the top-down scan with its interval and count,
the forced merges, the ablation without merging, and a saved model that is a stock LLaMA."""

from __future__ import annotations

import json

import pytest
import torch
from savedmodels import save_checked

from kb.errors import KBError
from reference_impls import laco
from reference_impls.harness.contract import Context
from reference_impls.harness.models import random_llama


def test_merge_rules():
    base, a, b = torch.tensor([1.0, 2.0]), torch.tensor([3.0, -1.0]), torch.tensor([0.5, 4.0])
    torch.testing.assert_close(laco.merged(base, [a, b], "rdsc"), base + (a - base) + (b - base))
    torch.testing.assert_close(laco.merged(base, [a, b], "released"), b)  # the notebook's in-place sum
    torch.testing.assert_close(laco.merged(base, [a], "rdsc"), laco.merged(base, [a], "released"))
    assert torch.equal(base, torch.tensor([1.0, 2.0]))  # inputs untouched


def test_similarity_is_the_mean_cosine_of_flattened_outputs():
    x = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(0))
    assert laco.similarity(x, 2.5 * x) == pytest.approx(1.0)
    y = x.clone()
    y[1] = -y[1]
    assert laco.similarity(x, y) == pytest.approx(1 / 3)
    assert laco.merge_size(laco.Config(), 40) == 7 and laco.merge_size(laco.Config(), 30) == 5
    assert laco.merge_size(laco.Config(), 4) == 2 and laco.merge_size(laco.Config(merge_layers=3), 40) == 3


def test_collapse_sums_differences_keeps_norms_and_renumbers():
    model, dense = random_llama(seed=0, layers=5), random_llama(seed=0, layers=5)
    laco.collapse(model, 1, 2, "rdsc")
    assert len(model.model.layers) == 3 and model.config.num_hidden_layers == 3
    got, src = model.model.layers[1], dense.model.layers
    for name, param in got.named_parameters():
        part = [src[i].get_parameter(name) for i in (1, 2, 3)]
        expected = part[0] if "layernorm" in name else part[0] + (part[1] - part[0]) + (part[2] - part[0])
        torch.testing.assert_close(param, expected)
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1, 2]
    assert all(
        torch.equal(p, q)
        for p, q in zip(model.model.layers[2].parameters(), src[4].parameters(), strict=True)
    )


def test_the_scan_moves_down_by_the_interval_after_a_kept_merge(calib_ids):
    """Threshold -1 keeps every merge: 8 layers, C = 3, I = 2 -> merges at 4, 2, 0 (current indices)."""
    model = random_llama(seed=1, layers=8)
    outcome = laco.prune(model, calib_ids, laco.Config(merge_layers=3, interval=2, threshold=-1.0), Context())
    assert [(t["at"], t["absorbed"], t["kept"]) for t in outcome.details["trials"]] == [
        (4, 2, True), (2, 2, True), (0, 2, True)]  # fmt: skip
    assert outcome.removed_layers == [1, 2, 3, 4, 5, 6] and outcome.details["kept_layers"] == [0, 7]
    with pytest.raises(KBError, match="no merge"):  # nothing exceeds a similarity of 1
        laco.prune(
            random_llama(seed=1, layers=8), calib_ids, laco.Config(merge_layers=3, threshold=1.0), Context()
        )


def test_a_count_stops_the_scan_and_clamps_the_last_merge(calib_ids):
    model = random_llama(seed=1, layers=8)
    config = laco.Config(layers=3, merge_layers=3, threshold=-1.0)
    outcome = laco.prune(model, calib_ids, config, Context())
    assert [(t["at"], t["absorbed"]) for t in outcome.details["trials"]] == [(4, 2), (3, 1)]
    assert outcome.removed_layers == [4, 5, 6] and outcome.details["forced_merges"] == 0


def test_short_of_the_count_the_most_similar_merges_are_forced(calib_ids):
    model = random_llama(seed=2, layers=8)
    outcome = laco.prune(model, calib_ids, laco.Config(layers=3, merge_layers=3, threshold=1.0), Context())
    trials = outcome.details["trials"]
    rejected = [t for t in trials if not t["kept"]]
    forced = [t for t in trials if t["forced"]]
    assert len(rejected) == 5 and all(t["kept"] for t in forced) and len(outcome.removed_layers) == 3
    # the first forced merge is the best of the scan, which tried the same merges on the same model (ties: higher)
    best = max(rejected, key=lambda t: t["similarity"])
    assert {k: forced[0][k] for k in ("at", "absorbed", "similarity")} == {
        k: best[k] for k in ("at", "absorbed", "similarity")
    }
    assert outcome.details["forced_merges"] == len(forced) >= 1


def test_without_merging_the_same_layers_go_and_the_rest_is_untouched(calib_ids, monkeypatch):
    config = laco.Config(layers=3, merge_layers=4, threshold=-1.0)
    ctx = Context()  # one comparison: both arms share the search
    merged, dropped, dense = (random_llama(seed=3, layers=7) for _ in range(3))
    a = laco.prune(merged, calib_ids, config, ctx)
    calls = []
    search = laco.search
    monkeypatch.setattr(laco, "search", lambda *args: calls.append(1) or search(*args))
    b = laco.prune(dropped, calib_ids, config.model_copy(update={"merge": False}), ctx)
    assert not calls and a.removed_layers == b.removed_layers == [3, 4, 5]
    for new, old in enumerate(a.details["kept_layers"]):
        kept = dropped.model.layers[new].state_dict()
        assert all(torch.equal(v, dense.model.layers[old].state_dict()[k]) for k, v in kept.items())
    assert not torch.equal(
        merged.model.layers[2].mlp.up_proj.weight, dense.model.layers[2].mlp.up_proj.weight
    )


def test_the_collapsed_model_saves_as_a_stock_llama(calib_ids, tmp_path):
    model = random_llama(seed=4, layers=6)
    laco.prune(model, calib_ids, laco.Config(layers=2, threshold=-1.0), Context())
    check = save_checked(model, tmp_path / "saved")
    assert check["max_abs_logit_diff"] <= check["relative_tolerance"] * check["logit_scale"]
    config = json.loads((tmp_path / "saved" / "config.json").read_text(encoding="utf-8"))
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 4 and "auto_map" not in config
