"""The Minitron approach on `random-llama`: equal-size width and depth students, the teacher left alone."""

from __future__ import annotations

import copy

import pytest
import torch

from kb.errors import KBError
from reference_impls import minitron_approach as M
from reference_impls.harness.contract import Context
from reference_impls.harness.models import random_llama

SHORT = {"kd_steps": 2, "batch_size": 2, "num_examples": 4}


def _params(model):
    return sum(p.numel() for p in model.parameters())


def test_width_and_depth_students_have_equal_size(calib_ids):
    width, depth = random_llama(seed=0, layers=4), random_llama(seed=0, layers=4)
    ow = M.prune(width, calib_ids, M.Config(axis="width", **SHORT), Context())
    od = M.prune(depth, calib_ids, M.Config(axis="depth", **SHORT), Context())
    assert len(depth.model.layers) == 3 and len(od.removed_layers) == 1 and len(width.model.layers) == 4
    assert width.config.hidden_size == 57 and width.config.num_attention_heads == 4  # heads and layers kept
    assert _params(depth) == od.details["depth_student_params"] == ow.details["depth_student_params"]
    per_channel_row = 3 * 57 * 4  # one MLP channel in every layer
    assert 0 <= _params(depth) - _params(width) < per_channel_row
    assert abs(_params(width) - _params(depth)) <= 0.02 * _params(depth)


def test_matching_intermediate_is_the_smallest_drop_that_fits():
    assert M.matching_intermediate(1000, 1000, 2, 5, 10) == 10
    assert M.matching_intermediate(1001, 1000, 2, 5, 10) == 9  # one channel saves 3 x 5 x 2 = 30
    assert M.matching_intermediate(1060, 1000, 2, 5, 10) == 8
    with pytest.raises(KBError, match="as small"):
        M.matching_intermediate(10_000, 0, 2, 5, 10)


def test_depth_removes_the_block_whose_absence_costs_least(calib_ids):
    model = random_llama(seed=0, layers=4)
    losses = M.block_losses(model, calib_ids[:4], 2)
    assert len(losses) == 3 and len(model.model.layers) == 4  # the model is restored
    dense = copy.deepcopy(model)
    M.prune(model, calib_ids, M.Config(axis="depth", layers_removed=2, **{**SHORT, "kd_steps": 0}), Context())
    start = min(range(3), key=lambda s: losses[s])
    kept = [i for i in range(4) if not start <= i < start + 2]
    for new, old in enumerate(kept):
        assert torch.equal(
            model.model.layers[new].mlp.up_proj.weight, dense.model.layers[old].mlp.up_proj.weight
        )


def test_distillation_trains_the_student_only_and_teacher_correction_changes_the_pruned_weights(calib_ids):
    plain, corrected = random_llama(seed=0, layers=4), random_llama(seed=0, layers=4)
    base = M.Config(axis="depth", **{**SHORT, "kd_steps": 0})
    M.prune(plain, calib_ids, base, Context())
    out = M.prune(corrected, calib_ids, base.model_copy(update={"teacher_correction_steps": 2, "lr": 1e-2}),
                  Context())  # fmt: skip
    assert out.details["teacher_correction"]["steps"] == 2
    assert not torch.equal(
        plain.model.layers[0].mlp.up_proj.weight, corrected.model.layers[0].mlp.up_proj.weight
    )
    student = random_llama(seed=0, layers=4)
    out = M.prune(student, calib_ids, M.Config(axis="width", **SHORT), Context())
    assert out.details["distillation"]["steps"] == 2 and out.details["distillation"]["loss_first"] > 0


def test_kb_prune_saves_a_width_student_that_loads_and_generates_in_a_fresh_process(tmp_path, capsys):
    from kb_cli.main import main
    from tests.impls.savedmodels import fresh_process

    save = tmp_path / "minitron"
    args = ["prune", "minitron-approach", "--model", "random-llama", "--nsamples", "8", "--seqlen", "64",
            "--eval-tokens", "256", "--set", "kd_steps=1", "--set", "batch_size=2", "--save", str(save)]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    got = fresh_process(
        save, tmp_path, remote=True
    )  # hidden 57 over 4 heads: saved with the project's config
    assert got["layers"] == 2 and len(got["tokens"]) == 8 + 6


def test_kb_reproduce_reports_both_speeds_at_equal_size(tmp_path, capsys):
    import json

    from kb_cli.main import main

    out = tmp_path / "r.json"
    args = ["reproduce", "minitron-approach", "--model", "random-llama", "--nsamples", "8", "--seqlen", "64",
            "--eval-tokens", "256", "--probe-items", "20", "--set", "kd_steps=1", "--set", "batch_size=2",
            "--json", str(out)]  # fmt: skip
    assert main(args) in (0, 1)
    capsys.readouterr()
    runs = {r["label"]: r for r in json.loads(out.read_text())["runs"]}
    assert list(runs) == ["dense", "width", "depth"]
    pw, pd = (runs[k]["metrics"]["size"]["params_total"] for k in ("width", "depth"))
    assert abs(pw - pd) <= 0.02 * pd
    assert all(runs[k]["metrics"]["speed"]["prefill_ms"] > 0 for k in ("width", "depth"))
    assert runs["depth"]["metrics"]["size"]["layers"] == 1 and runs["width"]["metrics"]["size"]["layers"] == 2
