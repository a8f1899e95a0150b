"""H2O on random-llama: accumulated attention is the column sum of the attention matrix, heavy hitters beat
nothing when there is no heavy part, and the method attaches a policy without touching a weight."""

from __future__ import annotations

import torch

from reference_impls import h2o, kv_window
from reference_impls.harness import eviction as ev
from reference_impls.harness.contract import Context, model_facts
from reference_impls.harness.models import random_llama

PROMPT, CONT = 40, 12


def _ids():
    return torch.randint(0, 256, (1, PROMPT + CONT), generator=torch.Generator().manual_seed(5))


def test_accumulated_attention_is_the_column_sum_per_kv_head():
    probs = torch.softmax(torch.randn(2, 4, 6, 6), dim=-1)
    got = h2o.accumulated_attention(probs, groups=2)
    manual = torch.stack([probs[:, 0:2].sum(dim=(1, 2)), probs[:, 2:4].sum(dim=(1, 2))], dim=1)
    torch.testing.assert_close(got, manual)
    assert got.shape == (2, 2, 6)
    torch.testing.assert_close(got.sum(-1), torch.full((2, 2), 12.0))  # every row of every head sums to 1


def test_scores_equal_the_column_sums_of_the_models_attention():
    """With a budget that never evicts, the scores after the last step are the column sums of the causal
    attention probabilities (eager attention of the model itself), summed over each KV head's query heads."""
    model = random_llama(seed=1, layers=2)
    ids = _ids()
    policy = h2o.policy(h2o.Config(budget_tokens=PROMPT + CONT))
    _logits, runtime = ev.simulate_logits(model, ids, policy, PROMPT, record=True)
    model.set_attn_implementation("eager")
    with torch.inference_mode():
        attentions = model(ids, use_cache=False, output_attentions=True).attentions
    for layer, probs in enumerate(attentions):
        expected = probs.sum(dim=2).reshape(1, 2, 2, -1).sum(dim=2)
        torch.testing.assert_close(runtime.final_scores[layer], expected, atol=1e-5, rtol=1e-5)


def test_no_heavy_part_equals_the_window_baseline():
    model = random_llama(seed=0, layers=2)
    ids = _ids()
    heavyless = h2o.policy(h2o.Config(kv_budget=0.3, recent_share=1.0))
    window = kv_window.policy(kv_window.Config(kv_budget=0.3))
    a_logits, a = ev.simulate_logits(model, ids, heavyless, PROMPT, record=True)
    b_logits, b = ev.simulate_logits(model, ids, window, PROMPT, record=True)
    assert torch.equal(a_logits, b_logits)
    assert all(
        torch.equal(x, y) for layer in a.trace for x, y in zip(a.trace[layer], b.trace[layer], strict=True)
    )


def test_heavy_hitters_are_the_most_attended_older_tokens():
    """At the end of the prompt the scored part holds the best-scored older positions, by accumulated attention."""
    model = random_llama(seed=0, layers=2)
    ids = _ids()
    policy = h2o.policy(h2o.Config(budget_tokens=10, recent_share=0.5))
    _logits, runtime = ev.simulate_logits(model, ids[:, : PROMPT + 1], policy, PROMPT, record=True)
    model.set_attn_implementation("eager")
    with torch.inference_mode():
        attentions = model(ids[:, :PROMPT], use_cache=False, output_attentions=True).attentions
    for layer, probs in enumerate(attentions):
        scores = probs.sum(dim=2).reshape(1, 2, 2, -1).sum(dim=2)[0]
        kept = runtime.trace[layer][0][0]  # after the prompt, (Hkv, 10)
        for head in range(2):
            older = scores[head, : PROMPT - 5]
            expected = set(torch.sort(older, descending=True, stable=True).indices[:5].tolist())
            assert set(kept[head].tolist()) == expected | set(range(PROMPT - 5, PROMPT))


def test_prune_describes_its_policy_and_changes_no_weight():
    model = random_llama(seed=0, layers=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    facts = model_facts(model)
    outcome = h2o.prune(model, None, h2o.Config(), Context())
    assert outcome.kind == "kv-cache" and outcome.cache_policy["name"] == "h2o"
    assert outcome.cache_policy["budget"] == {"fraction_of_prompt": 0.2, "recent_share": 0.5}
    built = h2o.policy(h2o.Config())  # what the harness builds and passes to the cache evaluation
    assert built.split(100) == ev.Split(20, 10, 10) and outcome.cache_policy == built.describe()
    assert model_facts(model) == facts and all(
        torch.equal(v, model.state_dict()[k]) for k, v in before.items()
    )
