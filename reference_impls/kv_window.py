"""The baselines of the KV-cache eviction papers: a recent window, and a window with StreamingLLM's sinks.

Window:   keep only the newest tokens (H2O's "Local" baseline, Keyformer's "window attention").
Sinks:    Xiao, Tian, Chen, Han, Lewis. "Efficient Streaming Language Models with Attention Sinks". ICLR 2024,
          arXiv:2309.17453 (official code mit-han-lab/streaming-llm). A window alone loses the first tokens,
          which soak up attention that has nowhere else to go; keeping the first `sink_tokens` (4 in the
          paper) plus the window restores most of the quality. Here the sinks are the scored part of the budget,
          ranked by position (earliest first), so the cache size is the same as the plain window's.
Differs:  StreamingLLM re-assigns positions inside the cache (rotary positions relative to the cache); here
          keys keep the position they were written with, as in H2O and Keyformer, so the three policies differ
          only in which entries they keep.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from kb.results import Outcome

from .harness.contract import Context
from .harness.eviction import AttentionView, Budget, CachePolicy, policy_outcome


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kv_budget: float = Field(0.2, gt=0)  # cache size as a fraction of the prompt
    budget_tokens: int | None = Field(None, ge=1)  # a count of cache entries instead (wins over kv_budget)
    sink_tokens: int = Field(0, ge=0)  # first tokens always kept (StreamingLLM: 4); 0 = a plain window


class FirstTokens:
    """Scorer: earlier positions rank higher, so the scored part of the budget holds the first tokens."""

    name = "first-tokens"

    def update(self, previous: torch.Tensor, view: AttentionView) -> torch.Tensor:
        return -view.key_positions.to(previous.dtype)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


def policy(config: Config) -> CachePolicy:
    """The window (or sink + window) cache policy of `config` (the harness evaluates it)."""
    size: dict[str, Any] = (
        {"tokens": config.budget_tokens} if config.budget_tokens else {"fraction": config.kv_budget}
    )
    if config.sink_tokens:
        return CachePolicy("sink", Budget(**size, scored_tokens=config.sink_tokens), FirstTokens())
    return CachePolicy("window", Budget(**size, recent=1.0))


def prune(model: nn.Module, calib: torch.Tensor | None, config: Config, ctx: Context) -> Outcome:
    """Report the window (or sink + window) cache policy; no weight changes (the harness builds it with
    `policy(config)`)."""
    return policy_outcome(policy(config))
