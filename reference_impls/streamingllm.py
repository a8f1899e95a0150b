"""StreamingLLM: attention sinks plus a recent window in the KV cache, with positions assigned inside the cache.

Paper:    Xiao, Tian, Chen, Han, Lewis. "Efficient Streaming Language Models with Attention Sinks". ICLR 2024,
          arXiv:2309.17453. Record id: `streamingllm`.
Official: mit-han-lab/streaming-llm: `streaming_llm/kv_cache.py` (`StartRecentKVCache`: keep `start_size`
          first and `recent_size` newest entries, drop the middle), `streaming_llm/pos_shift/modify_llama.py`
          (keys cached before RoPE; at every step key j of the cache is rotated by j and the query by its cache
          index), `examples/eval_long_ppl.py` (token-by-token perplexity, the cache cut after every step);
          defaults 4 sinks (`start_size=4`) and a window of 2000 (the chatbot) or 1020 (the perplexity tables).
Idea:     models park surplus attention on the first tokens whatever they say; a sliding window that evicts them
          breaks. Keep the first few tokens ("attention sinks") and a window of recent tokens, and give every
          kept entry its position inside the cache, not in the text, so that relative distances never exceed
          what the model saw in training, however long the stream.
Here:     the cache policy is a budget whose scored part is the `sink_tokens` first positions (ranked by position,
          `kv_window.FirstTokens`) and whose rest is the recent window, evaluated with `positions="cache"`
          (`harness/cache_positions.py`: in both the teacher-forced mask and real eviction, the j-th kept key is
          turned to rotary position j and the query to the slot after the keys).
Differs:  (1) the cache size is a fraction of the prompt (`kv_budget`; the claim uses 25% of a 256-token prompt,
          64 entries), not the paper's 1024-4096 entries over streams of thousands of tokens; (2) the prompt is
          read with full attention and then cut, as in the harness's other policies; between steps the cache
          holds the budget and each step attends over it plus the new token (as `eval_long_ppl.py`); (3) the
          rotated keys are turned further by (slot - position) rather than re-rotated from un-rotated copies (the
          same rotation, up to rounding); (4) GQA: one cache per KV head, all heads keep the same positions.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from kb.results import Outcome

from .harness.contract import Context
from .harness.eviction import Budget, CachePolicy, policy_outcome
from .kv_window import FirstTokens


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kv_budget: float = Field(0.25, gt=0)  # cache size as a fraction of the prompt (paper: 4 + 1020 entries)
    budget_tokens: int | None = Field(None, ge=1)  # a count of cache entries instead (wins over kv_budget)
    sink_tokens: int = Field(4, ge=1)  # first tokens always kept (paper: 4)
    positions: Literal["cache", "original"] = "cache"  # "original": keys keep their text position (ablation)


def policy(config: Config) -> CachePolicy:
    """The StreamingLLM cache policy of `config`: `sink_tokens` first entries plus the recent window, positions
    inside the cache (the harness evaluates it; see `harness/eviction.py`)."""
    size: dict[str, Any] = (
        {"tokens": config.budget_tokens} if config.budget_tokens else {"fraction": config.kv_budget}
    )
    budget = Budget(**size, scored_tokens=config.sink_tokens)
    return CachePolicy("streamingllm", budget, FirstTokens(), positions=config.positions)


def prune(model: nn.Module, calib: torch.Tensor | None, config: Config, ctx: Context) -> Outcome:
    """Report the StreamingLLM cache policy; no weight changes (the harness builds it with `policy(config)`)."""
    return policy_outcome(policy(config))
