"""Minitron on `random-llama`: activation importance keeps the top channels, distillation from the corrected
teacher and LM retraining."""

from __future__ import annotations

import copy

import pytest
import torch
from savedmodels import fresh_process, greedy

from kb.errors import KBError
from reference_impls import minitron as mt
from reference_impls.harness.contract import Context
from reference_impls.harness.models import random_llama
from reference_impls.harness.recovery import Budget, batch_order, kl_to_teacher
from reference_impls.minitron_approach import correct_teacher
from reference_impls.primitives import groups as G
from reference_impls.primitives.importance import group_importance, lm_loss


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


def test_the_student_distils_from_a_teacher_corrected_on_the_calibration_windows(calib_ids):
    dense = random_llama(seed=0, layers=2)
    model = copy.deepcopy(dense)
    config = mt.Config(recovery="kd", recovery_steps=2, recovery_batch=2, teacher_correction_steps=3, lr=1e-3)
    out = mt.prune(model, calib_ids, config, Context())
    fix = out.details["teacher_correction"]
    assert (fix["kind"], fix["steps"], fix["tokens"]) == ("teacher-correction", 3, 3 * 2 * 64)
    assert fix["probe_windows"] == 8
    # the same correction, done independently: 3 LM steps on a copy of the dense model (seed ctx.seed + 1)
    corrected = copy.deepcopy(dense)
    correct_teacher(corrected, calib_ids, 3, 2, lr=1e-3, seed=1)
    with torch.inference_mode():
        assert fix["calib_loss_before"] == pytest.approx(float(lm_loss(dense, calib_ids)), abs=1e-4)
        assert fix["calib_loss_after"] == pytest.approx(float(lm_loss(corrected, calib_ids)), abs=1e-4)
    # the corrected teacher fits the calibration windows better than the dense model does
    assert fix["calib_loss_after"] < fix["calib_loss_before"] - 0.01
    # the first distillation loss is the KL from the *corrected* teacher to the pruned (untrained) student
    student = copy.deepcopy(dense)
    mt.prune(student, calib_ids, mt.Config(), Context())
    ids = calib_ids[batch_order(8, Budget(2, 2), 0)[0]]
    with torch.inference_mode():
        to_corrected = float(kl_to_teacher(student(ids).logits, corrected(ids).logits))
        to_dense = float(kl_to_teacher(student(ids).logits, dense(ids).logits))
    assert out.details["recovery"]["loss_first"] == pytest.approx(to_corrected, abs=1e-4)
    assert abs(to_corrected - to_dense) > 1e-3  # ten times the tolerance: the two teachers are told apart
    # without correction the teacher is the dense model itself, and the LM-loss arm has no teacher to correct
    plain = mt.prune(copy.deepcopy(dense), calib_ids, config.model_copy(update={"teacher_correction_steps": 0}),
                     Context())  # fmt: skip
    assert "teacher_correction" not in plain.details
    assert plain.details["recovery"]["loss_first"] == pytest.approx(to_dense, abs=1e-4)
    lm = mt.prune(copy.deepcopy(dense), calib_ids, config.model_copy(update={"recovery": "lm"}), Context())
    assert "teacher_correction" not in lm.details


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
