"""The KV-cache eviction harness on random-llama: budgets, the selection, both modes, and their agreement.

Every policy (window, sink, H2O, Keyformer) is checked for the shared invariants: the cache never holds more than
the budget between steps, the recent window is never evicted, a budget that covers the sequence gives the logits
of full attention, and the simulated mask keeps exactly what real eviction keeps.
"""

from __future__ import annotations

import pytest
import torch

from kb.errors import KBError
from reference_impls import h2o, keyformer, kv_window
from reference_impls.harness import eviction as ev
from reference_impls.harness.kvcache import cache_kwarg
from reference_impls.harness.models import random_llama

PROMPT, CONT = 48, 16


@pytest.fixture(scope="module")
def model():
    return random_llama(seed=0, layers=2)


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 256, (1, PROMPT + CONT), generator=torch.Generator().manual_seed(3))


def _policies(fraction: float = 0.25) -> dict[str, ev.CachePolicy]:
    return {
        "window": kv_window.policy(kv_window.Config(kv_budget=fraction)),
        "sink": kv_window.policy(kv_window.Config(kv_budget=fraction, sink_tokens=4)),
        "h2o": h2o.policy(h2o.Config(kv_budget=fraction)),
        "keyformer": keyformer.policy(keyformer.Config(kv_budget=fraction)),
    }


def _real(model, ids, policy, *, record=True):
    """Teacher-forced real eviction: prompt, then the continuation one token per call; cache sizes per step."""
    sizes = []
    with ev.evicting(model, policy, decode_steps=CONT, record=record) as runtime:
        _tokens, logits = ev.decode(model, runtime, ids[:, :PROMPT], CONT, forced=ids[:, PROMPT:],
                                    on_prefill=lambda: sizes.append(runtime.cache_lengths()))  # fmt: skip
        sizes.append(runtime.cache_lengths())
    return logits, runtime, sizes


# ---- budget and selection -------------------------------------------------------------------------
def test_budget_resolution_fraction_count_and_split():
    assert ev.Budget(fraction=0.2, recent=0.5).resolve(100) == ev.Split(20, 10, 10)
    assert ev.Budget(fraction=0.5, recent=0.3).resolve(256) == ev.Split(128, 38, 90)
    assert ev.Budget(tokens=7, recent=1.0).resolve(1000) == ev.Split(7, 7, 0)
    assert ev.Budget(tokens=10, scored_tokens=4).resolve(3) == ev.Split(10, 6, 4)
    assert ev.Budget(fraction=0.01, recent=0.0).resolve(50) == ev.Split(
        1, 1, 0
    )  # the newest token always stays
    bad_budgets: list[dict[str, float]] = [
        {},
        {"fraction": 0.2, "tokens": 3},
        {"fraction": 0.0},
        {"tokens": 0},
        {"fraction": 0.2, "recent": 2},
    ]
    for bad in bad_budgets:
        with pytest.raises(KBError):
            ev.Budget(**bad)
    with pytest.raises(KBError, match="no scorer"):
        ev.CachePolicy("bad", ev.Budget(tokens=4, recent=0.5)).split(10)


def test_keep_mask_keeps_recent_then_best_scored_and_breaks_ties_by_position():
    positions = torch.arange(8).view(1, 1, 8)
    held = torch.ones(1, 1, 8, dtype=torch.bool)
    scores = torch.tensor([[[5.0, 1.0, 3.0, 3.0, 0.0, 9.0, 0.0, 0.0]]])
    keep = ev.keep_mask(scores, positions, held, newest=7, split=ev.Split(5, 2, 3))
    assert keep[0, 0].nonzero().flatten().tolist() == [0, 2, 5, 6, 7]  # 3.0 tie: position 2 wins over 3
    fits = ev.keep_mask(scores, positions, held, newest=7, split=ev.Split(8, 2, 6))
    assert bool(fits.all())


# ---- shared invariants, every policy ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["window", "sink", "h2o", "keyformer"])
def test_real_cache_stays_within_budget_and_keeps_the_recent_window(model, ids, name):
    policy = _policies()[name]
    split = policy.split(PROMPT)
    _logits, runtime, sizes = _real(model, ids, policy)
    assert all(n <= split.total for step in sizes for n in step) and sizes[0] == [split.total] * 2
    for layer, kept in runtime.trace.items():
        assert len(kept) == CONT + 1
        for step, positions in enumerate(kept):
            newest = PROMPT - 1 + step
            assert positions.shape[-1] <= split.total
            recent = set(range(newest - split.recent + 1, newest + 1))
            for head in positions[0]:
                assert recent <= set(head.tolist()), (layer, step)
    if name == "sink":
        assert all(set(range(4)) <= set(h.tolist()) for k in runtime.trace.values() for p in k for h in p[0])


@pytest.mark.parametrize("name", ["window", "sink", "h2o", "keyformer"])
def test_simulated_mask_and_real_eviction_keep_the_same_tokens(model, ids, name):
    policy = _policies()[name]
    sim_logits, sim = ev.simulate_logits(model, ids, policy, PROMPT, record=True)
    real_logits, real, _sizes = _real(model, ids, policy)
    assert sim.trace.keys() == real.trace.keys() == {0, 1}
    for layer in sim.trace:
        assert len(sim.trace[layer]) == len(real.trace[layer])
        assert all(torch.equal(a, b) for a, b in zip(sim.trace[layer], real.trace[layer], strict=True))
    torch.testing.assert_close(real_logits, sim_logits[:, PROMPT - 1 :], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["window", "sink", "h2o", "keyformer"])
def test_a_budget_covering_the_sequence_gives_full_attention(model, ids, name):
    policy = ev.CachePolicy(name, ev.Budget(tokens=PROMPT + CONT, recent=0.5), _policies()[name].scorer)
    if name == "window":
        policy = ev.CachePolicy(name, ev.Budget(tokens=PROMPT + CONT))
    with torch.inference_mode():
        full = model(ids, use_cache=False).logits
    sim_logits, _ = ev.simulate_logits(model, ids, policy, PROMPT)
    torch.testing.assert_close(sim_logits, full, atol=1e-5, rtol=0)
    real_logits, _runtime, sizes = _real(model, ids, policy)
    torch.testing.assert_close(real_logits, full[:, PROMPT - 1 :], atol=1e-5, rtol=0)
    assert sizes[-1] == [PROMPT + CONT] * 2


def test_a_small_budget_changes_the_continuation_logits(model, ids):
    with torch.inference_mode():
        full = model(ids, use_cache=False).logits
    sim_logits, _ = ev.simulate_logits(model, ids, _policies(0.1)["window"], PROMPT)
    assert torch.allclose(sim_logits[:, :PROMPT], full[:, :PROMPT], atol=1e-5)  # the prompt is read in full
    assert not torch.allclose(sim_logits[:, PROMPT:], full[:, PROMPT:], atol=1e-3)


def test_generate_evicts_and_matches_the_greedy_loop(model, ids):
    policy = _policies()["h2o"]
    split = policy.split(PROMPT)
    with ev.evicting(model, policy, decode_steps=8) as runtime:
        tokens, _logits = ev.decode(model, runtime, ids[:, :PROMPT], 8)
    with ev.evicting(model, policy, decode_steps=8) as runtime:
        cache = runtime.new_cache(model)
        out = model.generate(ids[:, :PROMPT], max_new_tokens=8, do_sample=False, **{cache_kwarg(model): cache},
                             attention_mask=torch.ones_like(ids[:, :PROMPT]), pad_token_id=0)  # fmt: skip
        lengths = runtime.cache_lengths()
    assert torch.equal(out[:, PROMPT:], tokens)
    assert lengths == [split.total] * 2
    assert model.config._attn_implementation != ev.ATTENTION  # restored after the block


def test_real_eviction_needs_the_runtime_cache(model, ids):
    from transformers import DynamicCache

    with ev.evicting(model, _policies()["h2o"]), pytest.raises(KBError, match="new_cache"):
        model(ids[:, :PROMPT], use_cache=True, **{cache_kwarg(model): DynamicCache(config=model.config)})
    with torch.inference_mode():
        model(ids)  # the model works as before outside the block


def test_prompt_too_long_for_a_continuation_is_an_error(model, ids):
    with pytest.raises(KBError, match="continuation"):
        ev.simulate_logits(model, ids, None, ids.shape[1])
