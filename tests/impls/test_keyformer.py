"""Keyformer on random-llama: the temperature schedule, the Gumbel score, its reduction to H2O without noise,
and seeded determinism."""

from __future__ import annotations

import itertools

import pytest
import torch

from reference_impls import h2o, keyformer
from reference_impls.harness import eviction as ev
from reference_impls.harness.models import random_llama

PROMPT, CONT = 40, 12


@pytest.fixture(scope="module")
def model():
    return random_llama(seed=0, layers=2)


def _ids(seed: int = 7):
    return torch.randint(0, 256, (1, PROMPT + CONT), generator=torch.Generator().manual_seed(seed))


def _same_trace(a: ev.Runtime, b: ev.Runtime) -> bool:
    return a.trace.keys() == b.trace.keys() and all(
        torch.equal(x, y) for layer in a.trace for x, y in zip(a.trace[layer], b.trace[layer], strict=True)
    )


def test_temperature_goes_linearly_from_tau_init_to_tau_end():
    taus = [keyformer.temperature(s, 10, 1.0, 2.0) for s in range(11)]
    assert taus[0] == 1.0 and taus[-1] == pytest.approx(2.0)
    assert all(b > a for a, b in itertools.pairwise(taus))
    assert keyformer.temperature(5, None, 1.0, 2.0) == 1.0  # no planned length: stays at tau_init


def test_gumbel_score_without_noise_at_tau_one_is_the_softmax():
    logits = torch.randn(1, 2, 3, 5)
    logits[..., -1] = -torch.inf
    torch.testing.assert_close(keyformer.keyformer_probs(logits, None, 1.0), torch.softmax(logits, dim=-1))
    noisy = keyformer.keyformer_probs(
        logits, keyformer.gumbel_noise(tuple(logits.shape), torch.Generator()), 1.5
    )
    assert torch.all(noisy[..., -1] == 0) and torch.allclose(noisy.sum(-1), torch.ones(1, 2, 3))
    assert not torch.allclose(noisy, torch.softmax(logits / 1.5, dim=-1))


def test_gumbel_noise_has_the_gumbel_mean():
    g = keyformer.gumbel_noise((200_000,), torch.Generator().manual_seed(0))
    assert float(g.mean()) == pytest.approx(0.5772, abs=0.01)  # the Euler-Mascheroni constant


def test_without_noise_and_at_tau_one_keyformer_selects_what_h2o_selects(model):
    ids = _ids()
    for fraction, share in ((0.3, 0.3), (0.5, 0.5), (0.2, 0.0)):
        kf = keyformer.policy(
            keyformer.Config(kv_budget=fraction, recent_share=share, noise=False, tau_end=1.0)
        )
        hh = h2o.policy(h2o.Config(kv_budget=fraction, recent_share=share))
        _a, a = ev.simulate_logits(model, ids, kf, PROMPT, record=True)
        _b, b = ev.simulate_logits(model, ids, hh, PROMPT, record=True)
        assert _same_trace(a, b), (fraction, share)


def test_seeded_runs_are_deterministic_and_the_seed_matters(model):
    ids = _ids()
    runs = [ev.simulate_logits(model, ids, keyformer.policy(keyformer.Config(kv_budget=0.3, seed=s)), PROMPT,
                               record=True) for s in (0, 0, 1, 2, 3)]  # fmt: skip
    (l0, r0), (l1, r1) = runs[0], runs[1]
    assert torch.equal(l0, l1) and _same_trace(r0, r1)
    assert any(not _same_trace(r0, r) for _l, r in runs[2:])


def test_noise_makes_keyformer_differ_from_h2o_somewhere(model):
    ids = _ids()
    hh = h2o.policy(h2o.Config(kv_budget=0.3, recent_share=0.3))
    _b, b = ev.simulate_logits(model, ids, hh, PROMPT, record=True)
    differs = []
    for seed in range(3):
        kf = keyformer.policy(keyformer.Config(kv_budget=0.3, seed=seed))
        _a, a = ev.simulate_logits(model, ids, kf, PROMPT, record=True)
        differs.append(not _same_trace(a, b))
    assert any(differs)


def test_cache_size_stays_constant_during_generation(model):
    ids = _ids()
    policy = keyformer.policy(keyformer.Config())
    total = policy.split(PROMPT).total
    sizes = []
    with ev.evicting(model, policy, decode_steps=CONT) as runtime:
        ev.decode(
            model, runtime, ids[:, :PROMPT], CONT, on_prefill=lambda: sizes.append(runtime.cache_lengths())
        )
        sizes.append(runtime.cache_lengths())
    assert sizes == [[total, total], [total, total]] and total == 20
