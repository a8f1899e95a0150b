"""Recovery helpers: the fused optimiser and the frozen-prefix cache change speed, never the training."""

from __future__ import annotations

import pytest
import torch

from reference_impls.harness.models import random_llama
from reference_impls.harness.recovery import Budget, adamw, frozen_prefix, partial_layer_steps, train_steps
from reference_impls.primitives.norms import untie_head


def test_adamw_is_fused_on_cpu_and_steps_like_the_plain_loop():
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(64, 32, generator=gen), torch.randn(32, generator=gen)]
    grads = [[torch.randn_like(t, generator=gen) for t in start] for _ in range(3)]
    results = []
    for make in (lambda ps: adamw(ps, 1e-2), lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.0)):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        opt = make(params)
        for step in grads:
            for p, g in zip(params, step, strict=True):
                p.grad = g.clone()
            opt.step()
        results.append((opt, params))
    (fused, a), (plain, b) = results
    assert fused.defaults["fused"] and not plain.defaults.get("fused")
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], start[0])  # it did move


def test_frozen_prefix_is_the_hidden_state_entering_the_layer(calib_ids):
    model = random_llama(seed=0, layers=4)
    states = frozen_prefix(model, calib_ids, 3, batch_size=3)
    with torch.no_grad():
        expected = model(input_ids=calib_ids, output_hidden_states=True).hidden_states[3]
    assert states.shape == expected.shape and torch.allclose(states, expected, atol=1e-5)
    assert states.requires_grad is False and not states.is_inference()
    assert frozen_prefix(model, calib_ids, 0) is None and frozen_prefix(model, calib_ids, 4) is None
    model.config.attention_dropout = 0.1  # dropout would make each step's prefix differ: no cache
    assert frozen_prefix(model, calib_ids, 3) is None


def test_partial_layer_training_from_the_cached_prefix_equals_running_the_whole_stack(calib_ids):
    cached, full = random_llama(seed=0, layers=5), random_llama(seed=0, layers=5)
    report = partial_layer_steps(cached, calib_ids, Budget(4, 2), last=2, lr=1e-3)
    untie_head(full)
    params = [p for layer in list(full.model.layers)[3:] for p in layer.parameters()]
    params += [full.model.norm.weight, full.lm_head.weight]  # the final norm and the head train too
    reference = train_steps(full, params, calib_ids, Budget(4, 2), lr=1e-3, kind="partial-layer")
    assert len(cached.model.layers) == 5  # the stack is restored
    assert report.losses == pytest.approx(reference.losses, rel=1e-5)
    got, want = cached.state_dict(), full.state_dict()
    assert got.keys() == want.keys()
    assert all(torch.allclose(got[k], want[k], atol=1e-5) for k in got)
    untouched = random_llama(seed=0, layers=5).state_dict()
    assert not torch.allclose(
        got["model.layers.4.mlp.down_proj.weight"], untouched["model.layers.4.mlp.down_proj.weight"]
    )
