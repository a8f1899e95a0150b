"""Minitron on `random-llama`: activation importance keeps the top channels, distillation and LM retraining."""

from __future__ import annotations

import copy

import pytest
import torch
from savedmodels import fresh_process, greedy

from kb.errors import KBError
from reference_impls import minitron as mt
from reference_impls.harness.contract import Context
from reference_impls.harness.models import random_llama
from reference_impls.harness.recovery import kl_to_teacher
from reference_impls.primitives import groups as G
from reference_impls.primitives.importance import group_importance


def test_activation_importance_keeps_the_top_channels_of_every_layer(calib_ids):
    dense = random_llama(seed=0, layers=2)
    fams = [G.mlp_family(dense, i) for i in range(2)]
    scores = group_importance(dense, fams, "activation", tokens=calib_ids, chunk=4)
    assert all(scores[f].shape == (128,) and bool((scores[f] >= 0).all()) for f in fams)
    model = copy.deepcopy(dense)
    out = mt.prune(model, calib_ids, mt.Config(), Context())
    assert out.details["mlp_widths"] == [85]  # round(128 x 2/3)
    for i, f in enumerate(fams):
        top = sorted(sorted(range(128), key=lambda u, f=f: (-float(scores[f][u]), u))[:85])
        torch.testing.assert_close(
            model.model.layers[i].mlp.up_proj.weight, dense.model.layers[i].mlp.up_proj.weight[top]
        )


def test_kv_groups_and_hidden_channels_follow_their_targets(calib_ids):
    model = random_llama(seed=0, layers=2)
    mt.prune(model, calib_ids, mt.Config(mlp_keep=0.5, kv_heads=1, hidden=48), Context())
    assert [G.attention_widths(model, i) for i in range(2)] == [(2, 1), (2, 1)]
    assert model.config.hidden_size == 48 and G.mlp_width(model, 0) == 64
    with pytest.raises(KBError, match="removes nothing"):
        mt.prune(random_llama(seed=0, layers=2), calib_ids, mt.Config(kv_heads=2), Context())


def test_distillation_loss_is_zero_for_the_teacher_itself_and_pulls_otherwise():
    gen = torch.Generator().manual_seed(0)
    teacher = torch.randn(2, 5, 11, generator=gen)
    assert float(kl_to_teacher(teacher, teacher)) == pytest.approx(0.0, abs=1e-6)
    student = torch.randn(2, 5, 11, generator=gen, requires_grad=True)
    kl_to_teacher(student, teacher).backward()
    assert student.grad is not None and float(student.grad.abs().sum()) > 0


def test_kd_and_lm_retraining_use_the_same_budget_and_differ(calib_ids):
    kd, lm = random_llama(seed=0, layers=2), random_llama(seed=0, layers=2)
    cfg = {"recovery_steps": 3, "recovery_batch": 2, "lr": 1e-3}
    a = mt.prune(kd, calib_ids, mt.Config(recovery="kd", **cfg), Context())
    b = mt.prune(lm, calib_ids, mt.Config(recovery="lm", **cfg), Context())
    assert a.details["recovery"]["kind"] == "kd" and b.details["recovery"]["kind"] == "lm"
    assert a.details["recovery"]["tokens"] == b.details["recovery"]["tokens"] == 3 * 2 * 64
    assert {n: p.shape for n, p in kd.named_parameters()} == {n: p.shape for n, p in lm.named_parameters()}
    assert not torch.equal(kd.model.layers[0].mlp.down_proj.weight, lm.model.layers[0].mlp.down_proj.weight)
    untrained = random_llama(seed=0, layers=2)
    mt.prune(untrained, calib_ids, mt.Config(), Context())
    assert torch.equal(untrained.model.embed_tokens.weight, kd.model.embed_tokens.weight)  # decoder only


def test_kb_prune_saves_a_model_that_loads_and_generates_in_a_fresh_process(tmp_path, capsys):
    from kb_cli.main import main
    from reference_impls.harness.models import load_model

    save = tmp_path / "pruned"
    args = ["--model", "random-llama", "--nsamples", "8", "--seqlen", "64", "--eval-tokens", "256"]
    sets = ["--set", "recovery=kd", "--set", "recovery_steps=2"]
    assert main(["prune", "minitron", *args, *sets, "--save", str(save)]) == 0
    capsys.readouterr()
    loaded = load_model(str(save), "cpu").model
    assert loaded.config.intermediate_size == 85
    result = fresh_process(save, tmp_path)
    assert result["tokens"] == greedy(loaded)[0].tolist()
