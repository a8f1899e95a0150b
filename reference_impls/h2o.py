"""H2O: keep the heavy hitters (most accumulated attention) and a window of recent tokens in the KV cache.

Paper:    Zhang, Sheng, Zhou, Chen, Zheng, Cai, Song, Tian, Ré, Barrett, Wang, Chen. "H2O: Heavy-Hitter Oracle
          for Efficient Generative Inference of Large Language Models". NeurIPS 2023, arXiv:2306.14048.
          Record id: `h2o`.
Official: FMInference/H2O, `h2o_hf/utils_real_drop/modify_llama.py` (`H2OKVCache_LayerWise`: real eviction
          during generation) and `h2o_hf/utils_lm_eval/modify_llama.py` (a masking simulation for lm-eval);
          its scripts run `--heavy_ratio 0.1 --recent_ratio 0.1`.
Idea:     a few tokens receive most of the attention mass, and they keep receiving it. Score every cached key
          by the attention probability it has received, summed over all query steps so far. The cache keeps a
          budget of k_heavy + k_recent entries per layer and head: the k_recent newest tokens and the k_heavy
          best-scored older ones ("heavy hitters"); after each decoding step the lowest-scored older token
          leaves (a greedy step of a submodular maximisation, which the paper analyses).
Differs:  (1) the budget is a fraction of the prompt (`kv_budget`, split `recent_share` : rest), resolved to a
          count once the prompt is read; the real-drop code takes counts, the lm-eval simulation fractions of
          the whole sequence; (2) the model here is GQA: scores are summed over the query heads sharing a KV
          head and eviction is per KV head (the paper's models are multi-head); (3) the lm-eval simulation's
          mask ranks keys by attention summed over *all* queries, later ones included (not causal); ours is
          the causal per-step policy, identical to real eviction (see `harness/eviction.py`); (4) scores
          accumulate the probabilities attention actually used (over the kept keys), as the real-drop cache
          does; (5) FlexGen offloading and the throughput system are not reproduced.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from kb.results import Outcome

from .harness.contract import Context
from .harness.eviction import AttentionView, Budget, CachePolicy, per_kv_head, policy_outcome


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kv_budget: float = Field(
        0.2, gt=0
    )  # cache size as a fraction of the prompt (paper: 10% heavy + 10% recent)
    budget_tokens: int | None = Field(None, ge=1)  # a count of cache entries instead (wins over kv_budget)
    recent_share: float = Field(0.5, ge=0, le=1)  # share of the budget kept as the recent window


# ---- pure math ------------------------------------------------------------------------------
def accumulated_attention(probs: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """Attention each key received: probabilities (b, Hq, q, k) summed over the query rows (the column sums of
    the attention matrix) and over the query heads of each KV head -> (b, Hkv, k)."""
    return per_kv_head(probs.float(), groups)


class HeavyHitterScore:
    """Scorer: a key's score is the attention probability it has received, summed over every step so far."""

    name = "accumulated-attention"

    def update(self, previous: torch.Tensor, view: AttentionView) -> torch.Tensor:
        return previous + accumulated_attention(view.probs, view.groups)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "sum": "over query steps and the query heads of a KV head"}


def policy(config: Config) -> CachePolicy:
    """The H2O cache policy of `config` (the harness evaluates it; see `harness/eviction.py`)."""
    if config.budget_tokens is not None:
        budget = Budget(tokens=config.budget_tokens, recent=config.recent_share)
    else:
        budget = Budget(fraction=config.kv_budget, recent=config.recent_share)
    return CachePolicy("h2o", budget, HeavyHitterScore())


# ---- model driver ---------------------------------------------------------------------------------
def prune(model: nn.Module, calib: torch.Tensor | None, config: Config, ctx: Context) -> Outcome:
    """Report the H2O cache policy; no weight changes (the harness builds it with `policy(config)` and evaluates
    it while decoding)."""
    return policy_outcome(policy(config))
