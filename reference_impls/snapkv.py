"""SnapKV: compress the prompt's KV cache once, keeping what the end of the prompt attends to, plus that end.

Paper:    Li, Huang, Yang, Venkitesh, Locatelli, Ye, Cai, Lewis, Chen. "SnapKV: LLM Knows What You are Looking
          for Before Generation". NeurIPS 2024, arXiv:2404.14469. Record id: `snapkv`.
Official: FasterDecoding/SnapKV, `snapkv/monkeypatch/snapkv_utils.py` (`SnapKVCluster.update_kv`, called once on
          the prefill in the patched attention of Llama, Mistral and Mixtral); its LongBench configurations
          (`experiments/LongBench/config/ablation_c*_w32_k7_maxpool.json`) use an observation window of 32 tokens,
          max pooling with kernel 7 and 1024-4096 cache entries per layer (the patch's own fallback is kernel 5
          with average pooling).
Idea:     the last tokens of a prompt (the question, usually) already attend to what generation will need. After
          the prefill, in every layer and head: sum the attention probabilities that the last `window_size`
          prompt queries give each earlier position ("votes"), smooth the votes along positions with a 1-D
          pooling (so a kept token keeps its neighbours: the information is in spans, not single tokens), keep
          the `budget - window_size` best-pooled earlier positions plus the observation window itself, and drop
          the rest. This happens once; the generated tokens are appended without further eviction.
Differs:  (1) the budget is a fraction of the prompt (`kv_budget`; `budget_tokens` a count, as upstream's
          `max_capacity_prompt`), the window included; when the budget is not larger than the window only the
          newest `budget` tokens stay (upstream asserts budget > window); (2) GQA: votes are summed over the query
          heads of each KV head and one selection is made per KV head (the official patch repeats the KV heads
          first, so it selects per query head and stores g copies; KVCache-Factory's KV-head mode averages the
          group, which ranks the same); (3) ties of the pooled votes (max pooling makes plateaus) are broken by
          the position's own vote, then by the earlier position (upstream: `torch.topk`, in no set order);
          (4) votes are summed in float32 (upstream casts the probabilities to the model's dtype first); (5) the
          papers' prompts are thousands of tokens long (LongBench, 12.5K on average), ours 256.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from kb.results import Outcome

from .harness.contract import Context
from .harness.eviction import AttentionView, Budget, CachePolicy, per_kv_head, policy_outcome

Pooling = Literal["max", "avg"]


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kv_budget: float = Field(0.25, gt=0)  # entries kept after the prompt (window included), of P
    budget_tokens: int | None = Field(None, ge=1)  # a count of entries instead (wins over kv_budget)
    window_size: int = Field(32, ge=1)  # observation window: the last prompt tokens that vote, always kept
    kernel_size: int = Field(7, ge=1)  # pooling width along positions (odd)
    pooling: Pooling = "max"

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"kernel_size must be odd so pooling keeps the length, got {value}")
        return value


# ---- pure math ------------------------------------------------------------------------------
def window_votes(probs: torch.Tensor, groups: int, window: int, prefix: int) -> torch.Tensor:
    """Attention the last `window` query rows give each of the first `prefix` keys: probs (b, Hq, q, k) summed
    over those rows and over the query heads of each KV head -> (b, Hkv, prefix)."""
    return per_kv_head(probs[:, :, -window:, :prefix].float(), groups)


def pool_votes(votes: torch.Tensor, kernel: int, pooling: Pooling) -> torch.Tensor:
    """Smooth (b, Hkv, n) votes along positions with a stride-1 window of `kernel` (odd) centred on each position,
    same length out: the maximum (padding never wins) or the mean (padding counts as 0, as upstream)."""
    if pooling == "max":
        return F.max_pool1d(votes, kernel, stride=1, padding=kernel // 2)
    return F.avg_pool1d(votes, kernel, stride=1, padding=kernel // 2, count_include_pad=True)


def selection_rank(pooled: torch.Tensor, votes: torch.Tensor) -> torch.Tensor:
    """A score per position whose order is (pooled vote, then own vote, then earlier position), best first:
    n for the best of n positions down to 1 for the worst. (b, Hkv, n) -> (b, Hkv, n), float32."""
    by_vote = torch.sort(votes, dim=-1, descending=True, stable=True).indices  # ties: earlier position first
    regroup = torch.sort(pooled.gather(-1, by_vote), dim=-1, descending=True, stable=True).indices
    order = by_vote.gather(-1, regroup)  # positions, best first
    n = votes.shape[-1]
    ranks = torch.arange(n, 0, -1, dtype=torch.float32, device=votes.device).expand_as(order)
    return torch.empty_like(ranks).scatter(-1, order, ranks)


class WindowVote:
    """Scorer: at the prompt, each position before the observation window gets the rank of its pooled window
    vote; later calls change nothing (the policy compresses once)."""

    name = "observation-window-vote"

    def __init__(self, window: int = 32, kernel: int = 7, pooling: Pooling = "max") -> None:
        self.window, self.kernel, self.pooling = window, kernel, pooling

    def update(self, previous: torch.Tensor, view: AttentionView) -> torch.Tensor:
        if view.step:
            return previous
        prompt = int(view.query_positions[-1]) + 1
        prefix = prompt - min(self.window, prompt)
        if prefix <= 0:
            return previous
        # at the prompt both modes list keys from position 0 in order, so the first `prefix` columns are the prefix
        assert int(view.key_positions[0, 0, prefix - 1]) == prefix - 1
        votes = window_votes(view.probs, view.groups, prompt - prefix, prefix)  # (b, Hkv, prefix)
        scores = previous.clone()
        scores[..., :prefix] = selection_rank(pool_votes(votes, self.kernel, self.pooling), votes)
        return scores

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "window": self.window, "kernel": self.kernel, "pooling": self.pooling,
                "sum": "over the window's query rows and the query heads of a KV head",
                "ties": "own vote, then earlier position"}  # fmt: skip


def policy(config: Config) -> CachePolicy:
    """The SnapKV cache policy of `config`: the observation window is the recent part of the budget, the pooled
    votes rank the rest, and the cache is cut once, after the prompt (the harness evaluates it)."""
    size: dict[str, Any] = (
        {"tokens": config.budget_tokens}
        if config.budget_tokens is not None
        else {"fraction": config.kv_budget}
    )
    budget = Budget(**size, recent_tokens=config.window_size)
    scorer = WindowVote(config.window_size, config.kernel_size, config.pooling)
    return CachePolicy("snapkv", budget, scorer, prompt_only=True)


# ---- model driver ---------------------------------------------------------------------------------
def prune(model: nn.Module, calib: torch.Tensor | None, config: Config, ctx: Context) -> Outcome:
    """Report the SnapKV cache policy; no weight changes (the harness builds it with `policy(config)` and
    evaluates it on prompt + continuation windows)."""
    return policy_outcome(policy(config))
