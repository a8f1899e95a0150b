"""SnapKV on random-llama: the pooled window votes, the tie order, the one-time cut after the prompt (the harness's
prompt-only option, which both modes must apply alike), and a policy that changes no weight."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kb.errors import KBError
from reference_impls import h2o, keyformer, kv_window, snapkv
from reference_impls.harness import eviction as ev
from reference_impls.harness.contract import Context, model_facts
from reference_impls.harness.models import random_llama

PROMPT, CONT = 48, 12
SMALL = snapkv.Config(budget_tokens=20, window_size=8, kernel_size=5)  # 8 window + 12 voted


@pytest.fixture(scope="module")
def model():
    return random_llama(seed=0, layers=2)


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 256, (1, PROMPT + CONT), generator=torch.Generator().manual_seed(11))


def _agree(model, ids, policy):
    """Teacher-forced real eviction (the prompt, then one continuation token per call) keeps the positions the
    simulated mask keeps at every step and gives the same logits; returns the simulation's runtime and the real
    cache's lengths after the prompt and at the end."""
    sim_logits, sim = ev.simulate_logits(model, ids, policy, PROMPT, record=True)
    with ev.evicting(model, policy, decode_steps=CONT, record=True) as real:
        after_prompt: list[list[int]] = []
        feed = {"forced": ids[:, PROMPT:], "on_prefill": lambda: after_prompt.append(real.cache_lengths())}
        real_logits = ev.decode(model, real, ids[:, :PROMPT], CONT, **feed)[1]
    assert sim.trace.keys() == real.trace.keys() == {0, 1}
    for layer in sim.trace:
        assert len(sim.trace[layer]) == len(real.trace[layer]) == CONT + 1
        assert all(torch.equal(a, b) for a, b in zip(sim.trace[layer], real.trace[layer], strict=True))
    torch.testing.assert_close(real_logits, sim_logits[:, PROMPT - 1 :], atol=1e-5, rtol=0)
    return sim, [*after_prompt, real.cache_lengths()]


# ---- pure math ------------------------------------------------------------------------------------
def test_pooling_keeps_the_length_and_pads_as_upstream():
    votes = torch.tensor([[[0.0, 5.0, 1.0, 0.0, 0.0, 2.0]]])
    assert snapkv.pool_votes(votes, 3, "max").tolist() == [[[5.0, 5.0, 5.0, 1.0, 2.0, 2.0]]]
    avg = snapkv.pool_votes(votes, 3, "avg")
    torch.testing.assert_close(
        avg, torch.tensor([[[5.0, 6.0, 6.0, 1.0, 2.0, 2.0]]]) / 3
    )  # padding counts as 0
    assert snapkv.pool_votes(votes, 1, "max").equal(votes)


def test_rank_orders_by_pooled_vote_then_own_vote_then_position():
    pooled = torch.tensor([[[5.0, 5.0, 5.0, 1.0, 2.0, 2.0]]])
    votes = torch.tensor([[[0.0, 5.0, 1.0, 0.0, 0.0, 2.0]]])
    rank = snapkv.selection_rank(pooled, votes)
    best_first = torch.argsort(rank, dim=-1, descending=True)[0, 0].tolist()
    assert best_first == [
        1,
        2,
        0,
        5,
        4,
        3,
    ]  # the 5.0 plateau by own vote; (2.0, 0.0) at 4 after (2.0, 2.0) at 5
    assert sorted(rank[0, 0].tolist()) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


def test_config_needs_an_odd_kernel():
    with pytest.raises(ValueError, match="odd"):
        snapkv.Config(kernel_size=4)


# ---- the selection on a model -------------------------------------------------------------------------
def test_prompt_cut_keeps_the_window_and_the_best_pooled_votes_of_the_models_attention(model, ids):
    """After the prompt every KV head holds the 8-token window and the 12 prefix positions with the best pooled
    votes, computed here from the model's own eager attention over the prompt."""
    policy = snapkv.policy(SMALL)
    _logits, runtime = ev.simulate_logits(model, ids, policy, PROMPT, record=True)
    model.set_attn_implementation("eager")
    with torch.inference_mode():
        attentions = model(ids[:, :PROMPT], use_cache=False, output_attentions=True).attentions
    prefix = PROMPT - 8
    for layer, probs in enumerate(attentions):
        votes = probs[:, :, -8:, :prefix].sum(dim=2).reshape(1, 2, 2, prefix).sum(dim=2)  # (1, Hkv, prefix)
        pooled = F.max_pool1d(votes, 5, stride=1, padding=2)
        kept = runtime.trace[layer][0][0]  # after the prompt, (Hkv, 20)
        for head in range(2):
            best = torch.argsort(snapkv.selection_rank(pooled, votes)[0, head], descending=True)[:12]
            assert set(kept[head].tolist()) == set(best.tolist()) | set(range(prefix, PROMPT))
            threshold = pooled[0, head, best].min()
            assert all(pooled[0, head, p] <= threshold for p in range(prefix) if p not in best.tolist())


def test_the_cut_happens_once_and_every_generated_token_stays(model, ids):
    sim, sizes = _agree(model, ids, snapkv.policy(SMALL))
    assert sizes == [[20, 20], [20 + CONT, 20 + CONT]]  # the real cache grows by one entry per step
    for kept in sim.trace.values():
        after_prompt = kept[0]
        for step, positions in enumerate(kept):
            new = torch.arange(PROMPT, PROMPT + step).expand(1, 2, step)
            assert torch.equal(positions, torch.cat([after_prompt, new], dim=-1))


def test_a_budget_covering_the_prompt_gives_full_attention(model, ids):
    with torch.inference_mode():
        full = model(ids, use_cache=False).logits
    sim_logits, _ = ev.simulate_logits(model, ids, snapkv.policy(snapkv.Config(budget_tokens=PROMPT)), PROMPT)
    torch.testing.assert_close(sim_logits, full, atol=1e-5, rtol=0)


def test_a_budget_within_the_window_is_a_window(model, ids):
    policy = snapkv.policy(snapkv.Config(budget_tokens=6, window_size=8))
    assert policy.split(PROMPT) == ev.Split(6, 6, 0)
    sim, _sizes = _agree(model, ids, policy)
    assert all(
        k[0][0, h].tolist() == list(range(PROMPT - 6, PROMPT)) for k in sim.trace.values() for h in (0, 1)
    )


# ---- the harness options SnapKV needs ------------------------------------------------------------------
def test_budget_with_a_recent_count_and_its_errors():
    assert ev.Budget(fraction=0.25, recent_tokens=32).resolve(256) == ev.Split(64, 32, 32)
    assert ev.Budget(tokens=10, recent_tokens=32).resolve(256) == ev.Split(10, 10, 0)
    assert ev.Budget(tokens=10, recent_tokens=3).describe() == {"tokens": 10, "recent_tokens": 3}
    for bad in ({"recent_tokens": 0}, {"recent_tokens": 2, "scored_tokens": 2}):
        with pytest.raises(KBError):
            ev.Budget(tokens=10, **bad)


@pytest.mark.parametrize("name", ["h2o", "keyformer"])
def test_prompt_only_works_with_any_scorer_in_both_modes(model, ids, name):
    base = {"h2o": h2o.policy(h2o.Config(kv_budget=0.3)), "keyformer": keyformer.policy(keyformer.Config())}[
        name
    ]
    once = ev.CachePolicy(name, base.budget, base.scorer, prompt_only=True)
    sim, sizes = _agree(model, ids, once)
    total = base.split(PROMPT).total
    assert sizes == [[total, total], [total + CONT, total + CONT]]
    _logits, evicting = ev.simulate_logits(model, ids, base, PROMPT, record=True)
    assert all(torch.equal(sim.trace[k][0], evicting.trace[k][0]) for k in sim.trace)  # the same first cut


def test_the_defaults_describe_and_run_as_before(model, ids):
    """The new options are off unless set: the description has no new key and the old steps text."""
    window = kv_window.policy(kv_window.Config(kv_budget=0.25))
    assert not window.prompt_only and window.layer_splits is None
    described = h2o.policy(h2o.Config()).describe()
    assert set(described) == {"name", "budget", "scorer", "gqa", "steps"}
    assert described["steps"].endswith("evicts back to the budget")
    _sim, sizes = _agree(model, ids, window)
    assert sizes == [[12, 12], [12, 12]]


def test_prune_describes_its_policy_and_changes_no_weight(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    facts = model_facts(model)
    outcome = snapkv.prune(model, None, snapkv.Config(), Context())
    built = snapkv.policy(snapkv.Config())
    assert outcome.kind == "kv-cache" and outcome.cache_policy == built.describe()
    assert outcome.cache_policy["budget"] == {"fraction_of_prompt": 0.25, "recent_tokens": 32}
    assert "no eviction" in outcome.cache_policy["steps"] and built.split(256) == ev.Split(64, 32, 32)
    assert model_facts(model) == facts and all(
        torch.equal(v, model.state_dict()[k]) for k, v in before.items()
    )
