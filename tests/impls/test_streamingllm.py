"""StreamingLLM on random-llama: keys re-rotated to their slot in the cache and the query to the slot after them,
layer 0 attending exactly as if the kept tokens were a fresh sequence, both eviction modes agreeing with
positions inside the cache, and the original-positions setting reducing to the sink baseline bit for bit."""

from __future__ import annotations

import pytest
import torch
from test_eviction import CONT, PROMPT, _real  # the same prompt, continuation and teacher-forced real cache
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from kb.errors import KBError
from reference_impls import h2o, kv_window, streamingllm
from reference_impls.harness import cache_positions as cp
from reference_impls.harness import eviction as ev
from reference_impls.harness.contract import Context, model_facts
from reference_impls.harness.kvcache import cache_kwarg
from reference_impls.harness.models import random_llama


@pytest.fixture(scope="module")
def model():
    return random_llama(seed=0, layers=2)


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 256, (1, PROMPT + CONT), generator=torch.Generator().manual_seed(11))


def _rope(model, x, positions):
    """x (b, h, n, d) rotated by the model's own rotary embedding at `positions` (n,)."""
    cos, sin = model.model.rotary_emb(x, positions.unsqueeze(0))
    return apply_rotary_pos_emb(x, x, cos, sin)[0]


def _policy(positions="cache", fraction=0.25):
    return streamingllm.policy(streamingllm.Config(kv_budget=fraction, positions=positions))


# ---- the rotation ----------------------------------------------------------------------------------
def test_rotating_further_equals_the_models_rope_at_the_new_position(model):
    attn = model.model.layers[0].self_attn
    x = torch.randn(1, 2, 6, 16, generator=torch.Generator().manual_seed(0))
    written = torch.tensor([0, 3, 9, 40, 41, 90])
    target = torch.tensor([0, 1, 2, 3, 4, 5])
    got = cp.rotate(_rope(model, x, written), target - written, cp.inverse_frequencies(attn))
    torch.testing.assert_close(got, _rope(model, x, target), atol=1e-5, rtol=1e-5)
    same = _rope(model, x, written)
    assert torch.equal(cp.rotate(same, torch.zeros(6), cp.inverse_frequencies(attn)), same)  # exact identity


def test_slot_logits_put_key_j_at_j_and_the_queries_after_the_cache(model):
    """The paper's definition on un-rotated vectors: key j of the cache rotated by j, query i of the q newest by
    k - q + i; `slot_logits` gets the same vectors rotated at their text positions instead."""
    attn = model.model.layers[0].self_attn
    g = torch.Generator().manual_seed(1)
    q_raw, k_raw = torch.randn(1, 4, 2, 16, generator=g), torch.randn(1, 2, 7, 16, generator=g)
    text = torch.tensor([0, 1, 2, 3, 57, 58, 59])  # 4 sinks, a window; the last two are the new tokens
    query = _rope(model, q_raw, text[-2:])
    key = torch.stack([_rope(model, k_raw[:, h : h + 1], text)[:, 0] for h in range(2)], dim=1)
    got = cp.slot_logits(query, key, 58, text.expand(1, 2, 7), cp.inverse_frequencies(attn), 0.25)
    slots = torch.arange(7)
    keys = _rope(model, k_raw, slots).repeat_interleave(2, dim=1)
    expected = _rope(model, q_raw, slots[-2:]) @ keys.transpose(2, 3)
    torch.testing.assert_close(got, expected * 0.25, atol=1e-5, rtol=1e-5)


def test_layer_zero_attends_as_if_the_kept_tokens_were_a_fresh_sequence(model, ids):
    """Layer 0's keys depend on their own token only, so with positions inside the cache its output for a
    continuation token equals running the model on [kept tokens, that token] from position 0; with the keys'
    text positions (the sink baseline) it does not."""
    outputs = {}

    def grab(_module, _inputs, out):
        outputs["layer0"] = (out[0] if isinstance(out, tuple) else out).clone()

    hook = model.model.layers[0].register_forward_hook(grab)
    try:
        diffs = {}
        for positions in ("cache", "original"):
            _logits, runtime = ev.simulate_logits(model, ids, _policy(positions), PROMPT, record=True)
            streamed = outputs["layer0"]
            worst = 0.0
            for step in (3, CONT - 1):
                t = PROMPT + step
                kept = [*runtime.trace[0][step][0, 0].tolist(), t]  # held before row t, and t itself
                with torch.inference_mode():
                    model(ids[:, kept], use_cache=False)
                worst = max(worst, float((outputs["layer0"][0, -1] - streamed[0, t]).abs().max()))
            diffs[positions] = worst
    finally:
        hook.remove()
    assert diffs["cache"] < 1e-5 and diffs["original"] > 1e-4, diffs


# ---- the policy in both modes -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["streamingllm", "h2o-cache-positions"])
def test_simulated_mask_and_real_eviction_agree_with_cache_positions(model, ids, name):
    policy = _policy()
    if name != "streamingllm":
        base = h2o.policy(h2o.Config(kv_budget=0.25))
        policy = ev.CachePolicy(name, base.budget, base.scorer, positions="cache")
    split = policy.split(PROMPT)
    sim_logits, sim = ev.simulate_logits(model, ids, policy, PROMPT, record=True)
    real_logits, real, sizes = _real(model, ids, policy)
    assert sim.trace.keys() == real.trace.keys() == {0, 1}
    for layer in sim.trace:
        assert all(torch.equal(a, b) for a, b in zip(sim.trace[layer], real.trace[layer], strict=True))
    torch.testing.assert_close(real_logits, sim_logits[:, PROMPT - 1 :], atol=1e-5, rtol=0)
    assert all(n == split.total for step in sizes for n in step)
    if name == "streamingllm":
        assert split == ev.Split(12, 8, 4)
        for kept in real.trace[0]:
            assert all(h[:4].tolist() == [0, 1, 2, 3] for h in kept[0])  # the sinks never leave


def test_original_positions_is_the_sink_baseline_and_cache_positions_change_only_the_continuation(model, ids):
    sink = kv_window.policy(kv_window.Config(kv_budget=0.25, sink_tokens=4))
    baseline, _ = ev.simulate_logits(model, ids, sink, PROMPT)
    original, _ = ev.simulate_logits(model, ids, _policy("original"), PROMPT)
    shifted, _ = ev.simulate_logits(model, ids, _policy("cache"), PROMPT)
    assert torch.equal(original, baseline)
    assert torch.equal(shifted[:, :PROMPT], baseline[:, :PROMPT])  # the prompt is read with text positions
    assert not torch.allclose(shifted[:, PROMPT:], baseline[:, PROMPT:], atol=1e-4)


def test_a_cache_covering_the_sequence_gives_full_attention(model, ids):
    policy = streamingllm.policy(streamingllm.Config(budget_tokens=PROMPT + CONT))
    with torch.inference_mode():
        full = model(ids, use_cache=False).logits
    sim_logits, _ = ev.simulate_logits(model, ids, policy, PROMPT)
    torch.testing.assert_close(sim_logits, full, atol=1e-5, rtol=0)
    real_logits, _runtime, _sizes = _real(model, ids, policy)
    torch.testing.assert_close(real_logits, full[:, PROMPT - 1 :], atol=1e-5, rtol=0)


def test_generate_keeps_cache_positions_like_the_greedy_loop(model, ids):
    policy = _policy()
    with ev.evicting(model, policy, decode_steps=6) as runtime:
        tokens, _logits = ev.decode(model, runtime, ids[:, :PROMPT], 6)
    with ev.evicting(model, policy, decode_steps=6) as runtime:
        cache = runtime.new_cache(model)
        out = model.generate(ids[:, :PROMPT], max_new_tokens=6, do_sample=False, **{cache_kwarg(model): cache},
                             attention_mask=torch.ones_like(ids[:, :PROMPT]), pad_token_id=0)  # fmt: skip
    assert torch.equal(out[:, PROMPT:], tokens)


# ---- the method ------------------------------------------------------------------------------------
def test_prune_describes_its_policy_and_changes_no_weight(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    facts = model_facts(model)
    outcome = streamingllm.prune(model, None, streamingllm.Config(), Context())
    built = streamingllm.policy(streamingllm.Config())
    assert outcome.kind == "kv-cache" and outcome.cache_policy == built.describe()
    assert outcome.cache_policy["budget"] == {"fraction_of_prompt": 0.25, "scored_tokens": 4}
    assert outcome.cache_policy["positions"] == cp.DESCRIPTION and built.split(256) == ev.Split(64, 60, 4)
    assert "positions" not in kv_window.policy(kv_window.Config(sink_tokens=4)).describe()  # the default
    assert model_facts(model) == facts
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    with pytest.raises(KBError, match="cache positions"):
        ev.CachePolicy("bad", ev.Budget(tokens=4), positions="text")


def test_rope_types_with_moving_frequencies_are_refused(ids):
    moving = random_llama(seed=0, layers=1)
    moving.config.rope_parameters = {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}
    with pytest.raises(KBError, match="fixed rotary frequencies"):
        ev.simulate_logits(moving, ids, _policy(), PROMPT)
