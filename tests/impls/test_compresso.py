"""Compresso on `random-llama`: frozen base during mask learning, exact global counts, equal sizes and tokens."""

from __future__ import annotations

import pytest
import torch

from kb.errors import KBError
from reference_impls import compresso as C
from reference_impls.harness.contract import Context
from reference_impls.harness.models import random_llama
from reference_impls.primitives import groups as G

SHORT = {"mask_steps": 3, "finetune_steps": 2, "batch_size": 2, "target_sparsity": 0.25}


def test_global_lowest_takes_the_k_lowest_but_never_a_whole_family():
    model = random_llama(seed=0, layers=2)
    a, b = G.kv_head_family(model, 0), G.kv_head_family(model, 1)
    got = C.global_lowest({a: torch.tensor([0.1, 0.2]), b: torch.tensor([0.3, 0.05])}, 2)
    assert got == {a: [0], b: [1]}
    got = C.global_lowest({a: torch.tensor([0.1, 0.2]), b: torch.tensor([0.3, 0.4])}, 2)
    assert got == {a: [0], b: [0]}  # a's second unit would empty it


def test_learned_masks_leave_the_base_weights_untouched_until_the_merge(calib_ids, monkeypatch):
    from reference_impls.primitives import l0

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
            "256", "--set", "mask_steps=2", "--set", "finetune_steps=1", "--set", "batch_size=2", "--save", str(save)]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    got = fresh_process(save, tmp_path, remote=True)
    assert got["layers"] == 2 and len(got["tokens"]) == 8 + 6


def test_kb_reproduce_compares_equal_sizes_and_runs_random_only_on_request(tmp_path, capsys):
    import json

    from kb_cli.main import main

    out = tmp_path / "r.json"
    args = ["reproduce", "compresso", "--model", "random-llama", "--nsamples", "8", "--seqlen", "64",
            "--eval-tokens", "256", "--probe-items", "20", "--set", "mask_steps=2", "--set", "finetune_steps=1",
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
