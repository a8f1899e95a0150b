"""PyramidKV: SnapKV's one-time prompt cut with per-layer budgets shaped as a pyramid, large low, small high.

Paper:    Cai, Zhang, Gao, Liu, Liu, Lu, Xiong, Dong, Chang, Hu, Xiao. "PyramidKV: Dynamic KV Cache Compression
          based on Pyramidal Information Funneling". COLM 2025, arXiv:2406.02069. Record id: `pyramidkv`.
Official: Zefan-Cai/KVCache-Factory (formerly PyramidKV), `pyramidkv/pyramidkv_utils.py` (`PyramidKVCluster`,
          `beta` 20); `run_longbench.py` runs SnapKV and PyramidKV with an observation window of 8 tokens, max
          pooling with kernel 7, and `max_capacity_prompts` entries per layer on average (the paper: 64-2048).
Idea:     attention funnels through the layers: low layers spread it over the whole prompt, high layers look at a
          few tokens. So instead of one cache size for every layer, give the low layers more entries and the high
          ones fewer, at the same total, and pick the entries of each layer as SnapKV does (the pooled votes of
          the last prompt tokens; `reference_impls/snapkv.py`), once, after the prompt. With an average of B
          entries per layer, a window of W and P prompt tokens, the entries beyond the window go linearly from
          `high` in the first layer to `low` in the last: low = (B - W) // beta, high = 2 (B - W) - low, both
          moved to high = P - W, low = 2 (B - W) - high when high would exceed the prefix; a prompt shorter
          than 2 (B - W) gets the uniform split.
Differs:  (1) upstream steps the schedule by the floor of (high - low) / (layers - 1), which leaves the layers
          more than the uniform total (on 30 layers with 24 entries each beyond the window, 32.5 on average);
          here the exact line is rounded to whole entries with the total kept equal to the uniform one
          (largest remainders; ties to the lower layer); (2) the budget is a fraction of the prompt (`kv_budget`,
          or `budget_tokens`), as in `snapkv.py`, whose differences (GQA per KV head, tie order, float32 votes)
          apply here too; (3) the paper's prompts are thousands of tokens long (LongBench), ours 256.
"""

from __future__ import annotations

import math
from dataclasses import replace
from fractions import Fraction
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from kb.results import Outcome

from . import snapkv
from .harness.contract import Context
from .harness.eviction import CachePolicy, Split, policy_outcome


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kv_budget: float = Field(0.125, gt=0)  # mean entries per layer after the prompt (window included), of P
    budget_tokens: int | None = Field(None, ge=1)  # a mean count of entries per layer instead (wins)
    window_size: int = Field(8, ge=1)  # observation window, always kept in every layer
    kernel_size: int = Field(7, ge=1)  # pooling width along positions (odd; checked as SnapKV's)
    pooling: snapkv.Pooling = "max"
    beta: int = Field(20, ge=1)  # the last layer keeps (B - W) // beta entries beyond the window

    @model_validator(mode="after")
    def _selection(self) -> Config:
        self.snap()  # the window and kernel follow SnapKV's rules
        return self

    def snap(self) -> snapkv.Config:
        """The same budget and selection as a SnapKV config."""
        return snapkv.Config(kv_budget=self.kv_budget, budget_tokens=self.budget_tokens,
                             window_size=self.window_size, kernel_size=self.kernel_size,
                             pooling=self.pooling)  # fmt: skip


# ---- pure math ------------------------------------------------------------------------------
def round_to_total(exact: list[Fraction], total: int) -> list[int]:
    """Whole numbers that sum to `total` (= sum of `exact`): floors, plus one for the largest remainders (ties:
    the earlier index)."""
    floors = [math.floor(x) for x in exact]
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - floors[i]), i))
    for i in order[: total - sum(floors)]:
        floors[i] += 1
    return floors


def pyramid(per_layer: int, room: int, layers: int, beta: int) -> list[int]:
    """Entries beyond the window for each layer, first layer first: a line from `high` down to `low` averaging
    `per_layer` exactly, none above `room` (the prefix length P - W)."""
    low = per_layer // beta
    high = 2 * per_layer - low
    if high >= room:
        high = room
        low = 2 * per_layer - high
    exact = [high - Fraction((high - low) * layer, layers - 1) for layer in range(layers)]
    return round_to_total(exact, per_layer * layers)


class Pyramid:
    """Per-layer splits (`eviction.LayerSplits`): the uniform split's entries beyond the window, reshaped into
    the pyramid; the window (the recent part) stays the same in every layer."""

    def __init__(self, beta: int = 20) -> None:
        self.beta = beta

    def split(self, uniform: Split, prompt_tokens: int, layer: int, layers: int) -> Split:
        window, per_layer = uniform.recent, uniform.scored
        if layers < 2 or per_layer == 0 or prompt_tokens < 2 * per_layer:
            return uniform  # upstream: a short prompt gets the uniform split
        scored = pyramid(per_layer, prompt_tokens - window, layers, self.beta)[layer]
        return Split(total=window + scored, recent=window, scored=scored)

    def describe(self) -> dict[str, Any]:
        return {"name": "pyramid", "beta": self.beta,
                "schedule": "linear over layers, largest first; same total as the uniform budget"}  # fmt: skip


def policy(config: Config) -> CachePolicy:
    """The PyramidKV cache policy of `config`: SnapKV's window votes and one-time cut, with the pyramid's
    per-layer budgets (the harness evaluates it)."""
    return replace(snapkv.policy(config.snap()), name="pyramidkv", layer_splits=Pyramid(config.beta))


# ---- model driver ---------------------------------------------------------------------------------
def prune(model: nn.Module, calib: torch.Tensor | None, config: Config, ctx: Context) -> Outcome:
    """Report the PyramidKV cache policy; no weight changes (the harness builds it with `policy(config)` and
    evaluates it on prompt + continuation windows)."""
    return policy_outcome(policy(config))
