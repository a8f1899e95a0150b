"""Hard-concrete (L0) masks on `random-llama`: samples, expected L0, deterministic top-k, Lagrangian signs,
and the compact model equal to the hooked (masked) model for every structure."""

from __future__ import annotations

import copy

import pytest
import torch

from reference_impls.harness.models import random_llama
from reference_impls.primitives import l0


def test_samples_are_in_the_unit_interval_and_hit_both_ends():
    la = torch.zeros(20000)
    z = l0.sample_z(la, torch.rand(20000).clamp(1e-6, 1 - 1e-6))
    assert z.min() >= 0 and z.max() <= 1
    assert (z == 0).any() and (z == 1).any() and ((z > 0) & (z < 1)).any()
    # the share of non-zero samples matches the closed-form keep probability
    assert abs(float((z > 0).float().mean()) - float(l0.keep_probability(la)[0])) < 0.01


def test_initial_masks_are_on_and_deterministic_keeps_exact_counts():
    mask = l0.HardConcrete(3, 10, seed=0)
    mask.constrain()
    assert torch.allclose(mask.log_alpha, torch.full((3, 10), l0.LOG_ALPHA_RANGE[1]), atol=0.05)
    assert bool((mask.keep_probability() > 0.99).all())
    with torch.no_grad():
        mask.log_alpha.copy_(torch.arange(30.0).reshape(3, 10) - 15)
    values = mask.deterministic(4)
    assert ((values != 0).sum(1) == 4).all()
    assert (values[:, 6:] > 0).all() and (values[:, :6] == 0).all()  # the largest log-alpha are kept
    per_row = mask.deterministic(torch.tensor([1, 2, 3]))
    assert (per_row != 0).sum(1).tolist() == [1, 2, 3]


def test_lagrangian_multipliers_push_towards_the_target():
    l1, l2 = torch.zeros((), requires_grad=True), torch.zeros((), requires_grad=True)
    expected = torch.tensor([0.1, 0.2])  # less sparse than the target 0.5
    loss = l0.lagrangian(expected, 0.5, l1, l2)
    loss.backward()
    assert l1.grad < 0 and l2.grad > 0  # ascent: lambda_1 goes negative, lambda_2 positive
    l1.data.fill_(-1.0)
    l2.data.fill_(1.0)
    s = torch.tensor([0.1, 0.2], requires_grad=True)
    l0.lagrangian(s, 0.5, l1.detach(), l2.detach()).backward()
    assert (s.grad < 0).all()  # descent on the model side then raises the expected sparsity
    assert (
        l0.warmed_target(0.6, 0, 4) == 0
        and l0.warmed_target(0.6, 2, 4) == 0.3
        and l0.warmed_target(0.6, 9, 4) == 0.6
    )


@pytest.mark.parametrize("only", ["heads", "intermediate", "layers", "hidden", "all"])
def test_compact_model_equals_the_masked_model(only):
    model = random_llama(seed=0, layers=3)
    masks = l0.StructureMasks.for_model(model, l0.STRUCTURES, seed=0)
    with torch.no_grad():
        for m in masks.masks.values():
            m.log_alpha.normal_(0, 2)
    keep = {"heads": 1, "intermediate": 100, "layers": 2, "hidden": 50}
    values = {k: masks.masks[k].deterministic(v) for k, v in keep.items()}
    values["hidden"] = (values["hidden"] != 0).float()
    if only != "all":
        values = {only: values[only]}
    ids = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(0))
    with l0.masked(model, values, masks.head_block), torch.no_grad():
        reference = model(ids).logits
    dense = copy.deepcopy(model)
    out = l0.finalize(model, values, masks.head_block)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference, atol=1e-5, rtol=1e-5)
        assert not torch.equal(dense(ids).logits, reference)
    layers = len(model.model.layers)
    assert layers == (2 if only in ("layers", "all") else 3) and len(out["removed_layers"]) == 3 - layers
    if only in ("hidden", "all"):
        assert model.config.hidden_size == 50


def test_hidden_values_must_be_binary():
    from kb.errors import KBError

    model = random_llama(seed=0, layers=2)
    with pytest.raises(KBError, match="0 or 1"):
        l0.finalize(model, {"hidden": torch.full((64,), 0.5)}, 32)
