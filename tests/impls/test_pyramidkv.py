"""PyramidKV on random-llama: the pyramid's shape and total, per-layer budgets in both harness modes (the
harness's per-layer option), and each layer selecting as SnapKV would with that layer's budget."""

from __future__ import annotations

import itertools
from fractions import Fraction

import pytest
import torch

from reference_impls import pyramidkv, snapkv
from reference_impls.harness import eviction as ev
from reference_impls.harness.contract import Context, model_facts
from reference_impls.harness.kvcache import cache_kwarg
from reference_impls.harness.models import random_llama

PROMPT, CONT, LAYERS = 64, 10, 4
SMALL = pyramidkv.Config(budget_tokens=20, window_size=4, kernel_size=3)  # 4 window + 16 voted on average


@pytest.fixture(scope="module")
def model():
    return random_llama(seed=2, layers=LAYERS)


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 256, (1, PROMPT + CONT), generator=torch.Generator().manual_seed(4))


# ---- the schedule -----------------------------------------------------------------------------------
def test_round_to_total_keeps_the_sum_and_gives_remainders_to_the_largest_parts():
    exact = [Fraction(7, 2), Fraction(5, 2), Fraction(13, 3), Fraction(2, 3)]  # sums to 11
    assert pyramidkv.round_to_total(exact, 11) == [4, 2, 4, 1]  # 1/2 ties: the earlier index gets the one


@pytest.mark.parametrize(
    ("per", "room", "layers"), [(24, 248, 30), (120, 1000, 32), (5, 9, 7), (100, 150, 3)]
)
def test_the_pyramid_falls_layer_by_layer_and_keeps_the_uniform_total(per, room, layers):
    caps = pyramidkv.pyramid(per, room, layers, 20)
    assert sum(caps) == per * layers and len(caps) == layers
    assert all(a >= b for a, b in itertools.pairwise(caps)) and caps[0] > caps[-1]
    assert max(caps) <= room and min(caps) >= 0


def test_an_even_step_matches_the_official_floor_schedule():
    """With (high - low) divisible by layers - 1, the exact line is upstream's: high - layer * step."""
    per, beta, layers = 24, 20, 24
    low = per // beta
    high = 2 * per - low
    step = (high - low) // (layers - 1)
    assert pyramidkv.pyramid(per, 1000, layers, beta) == [high - layer * step for layer in range(layers)]
    assert pyramidkv.pyramid(24, 248, 30, 20)[::29] == [47, 1]  # the claim's 30 layers: 47 down to 1


def test_a_short_prompt_or_a_window_only_budget_stays_uniform():
    rule = pyramidkv.Pyramid(20)
    uniform = ev.Split(40, 8, 32)
    assert rule.split(uniform, 63, 0, 30) == uniform  # upstream: prompt shorter than 2 (B - W)
    assert rule.split(ev.Split(8, 8, 0), 256, 0, 30) == ev.Split(8, 8, 0)
    assert rule.split(uniform, 256, 0, 1) == uniform
    top = rule.split(uniform, 256, 0, 30)
    assert top.recent == 8 and top.total == 8 + top.scored and top.scored > 32


# ---- per-layer budgets on a model, both modes ---------------------------------------------------------
def test_per_layer_budgets_hold_in_both_modes_with_the_same_total(model, ids):
    policy = pyramidkv.policy(SMALL)
    splits = [policy.split(PROMPT, layer, LAYERS) for layer in range(LAYERS)]
    assert [s.total for s in splits] == [36, 25, 15, 4] and sum(s.total for s in splits) == 20 * LAYERS
    sim_logits, sim = ev.simulate_logits(model, ids, policy, PROMPT, record=True)
    sizes = []
    with ev.evicting(model, policy, decode_steps=CONT, record=True) as real:
        _tokens, real_logits = ev.decode(model, real, ids[:, :PROMPT], CONT, forced=ids[:, PROMPT:],
                                         on_prefill=lambda: sizes.append(real.cache_lengths()))  # fmt: skip
        sizes.append(real.cache_lengths())
    assert sizes == [[s.total for s in splits], [s.total + CONT for s in splits]]
    assert sim.trace.keys() == real.trace.keys() == set(range(LAYERS))
    for layer in sim.trace:
        assert all(torch.equal(a, b) for a, b in zip(sim.trace[layer], real.trace[layer], strict=True))
    torch.testing.assert_close(real_logits, sim_logits[:, PROMPT - 1 :], atol=1e-5, rtol=0)


def test_generate_runs_with_caches_of_different_lengths_per_layer(model, ids):
    policy = pyramidkv.policy(SMALL)
    with ev.evicting(model, policy, decode_steps=6) as runtime:
        tokens, _logits = ev.decode(model, runtime, ids[:, :PROMPT], 6)
    with ev.evicting(model, policy, decode_steps=6) as runtime:
        cache = runtime.new_cache(model)
        out = model.generate(ids[:, :PROMPT], max_new_tokens=6, do_sample=False, **{cache_kwarg(model): cache},
                             attention_mask=torch.ones_like(ids[:, :PROMPT]), pad_token_id=0)  # fmt: skip
        lengths = runtime.cache_lengths()
    assert torch.equal(out[:, PROMPT:], tokens) and lengths == [36 + 5, 25 + 5, 15 + 5, 4 + 5]


def test_each_layer_selects_what_snapkv_selects_with_that_layers_budget(model, ids):
    """The prompt is read with full attention, so a layer's votes do not depend on other layers' budgets."""
    policy = pyramidkv.policy(SMALL)
    _l, pyramid = ev.simulate_logits(model, ids, policy, PROMPT, record=True)
    for layer in range(LAYERS):
        total = policy.split(PROMPT, layer, LAYERS).total
        uniform = snapkv.policy(snapkv.Config(budget_tokens=total, window_size=4, kernel_size=3))
        _u, snap = ev.simulate_logits(model, ids, uniform, PROMPT, record=True)
        assert torch.equal(pyramid.trace[layer][0], snap.trace[layer][0])


def test_config_checks_the_selection_and_prune_changes_no_weight(model):
    with pytest.raises(ValueError, match="odd"):
        pyramidkv.Config(kernel_size=6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    facts = model_facts(model)
    outcome = pyramidkv.prune(model, None, pyramidkv.Config(), Context())
    built = pyramidkv.policy(pyramidkv.Config())
    assert outcome.kind == "kv-cache" and outcome.cache_policy == built.describe()
    assert outcome.cache_policy["layer_splits"]["beta"] == 20 and built.prompt_only
    assert built.split(256) == ev.Split(32, 8, 24)  # the uniform (mean) split the harness reports
    assert model_facts(model) == facts and all(
        torch.equal(v, model.state_dict()[k]) for k, v in before.items()
    )
