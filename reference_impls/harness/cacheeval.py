"""Long-context evaluation of a KV-cache policy: continuation perplexity, cache bytes, decode rate.

The policy is an argument (`eviction.CachePolicy`, or None for the full cache): the harness gets it from the
kv-cache method (`contract.cache_policy`) and passes it here; the model carries no policy.

Protocol. Every evaluation window of `seqlen` tokens is a prompt (the first seqlen - C tokens) followed by a
continuation (the last C tokens); the budget of a policy is relative to the prompt length.
- Quality: the teacher-forced NLL of the continuation tokens only, under the simulated mask
  (`eviction.simulate_logits`): each continuation token is predicted with the cache the policy would hold at
  that step; the first one from the prompt's last position, read with the whole prompt as in real generation.
  Perplexity = exp(mean NLL over all continuation tokens of all windows).
- Memory and speed: real eviction (`eviction.evicting`) after the first window's prompt: prefill, cache bytes
  once the cache is cut to the budget, then `generate_tokens` greedy decoding steps and the cache bytes at the
  end. Decode tokens/s is the median over `repeats` timed runs after a short warm-up; `decode_speedup` divides it
  by the full cache's rate measured in the same process with the same threads (the full cache runs through the
  same attention function without eviction, so the ratio compares like with like). Tests never assert it.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kb.errors import KBError
from kb.results import CacheEval

from .eviction import CachePolicy, decode, evicting, simulate_logits
from .kvcache import cache_bytes


@dataclass(frozen=True)
class CacheSettings:
    continuation_tokens: int = 64
    generate_tokens: int = 32
    repeats: int = 1
    batch_size: int = 1


def continuation_nll(
    model: nn.Module,
    windows: torch.Tensor,
    policy: CachePolicy | None,
    continuation: int,
    batch_size: int = 1,
) -> list[float]:
    """The mean NLL of each window's continuation tokens under `policy` (None: full cache), in order."""
    prompt = windows.shape[1] - continuation
    means: list[float] = []
    for start in range(0, windows.shape[0], batch_size):
        ids = windows[start : start + batch_size]
        logits, _runtime = simulate_logits(model, ids, policy, prompt, stream=start)
        pred = logits[:, prompt - 1 : -1].float()  # (b, continuation, vocab)
        target = ids[:, prompt:].to(pred.device)  # (b, continuation)
        nll = F.cross_entropy(pred.transpose(1, 2), target, reduction="none")  # (b, continuation)
        means.extend(float(v) for v in nll.double().mean(dim=1))
    return means


def _generate_once(
    model: nn.Module, policy: CachePolicy | None, prompt: torch.Tensor, steps: int
) -> tuple[int, int, float]:
    """(cache bytes after the prompt, after the last step, decoding seconds) for one greedy run under `policy`."""
    marks: dict[str, float] = {}
    with evicting(model, policy, decode_steps=steps) as runtime:

        def after_prefill() -> None:
            marks["bytes"] = cache_bytes(runtime.cache)
            marks["start"] = time.perf_counter()

        decode(model, runtime, prompt, steps, on_prefill=after_prefill)
        seconds = time.perf_counter() - marks["start"]
        end_bytes = cache_bytes(runtime.cache)
    return int(marks["bytes"]), end_bytes, seconds


def evaluate_cache(
    model: nn.Module,
    windows: torch.Tensor,
    settings: CacheSettings,
    policy: CachePolicy | None,
    dense: CacheEval | None = None,
) -> CacheEval:
    """The long-context evaluation of `model` under `policy` (None: the full cache, the dense baseline); see the
    module. `dense` is the full cache's evaluation, for the decode speed-up."""
    seqlen = windows.shape[1]
    prompt_len = seqlen - settings.continuation_tokens
    if prompt_len < 2:
        raise KBError(f"--seqlen {seqlen} leaves no prompt before a {settings.continuation_tokens}-token continuation; "
                      f"use --seqlen {settings.continuation_tokens + 64} or more")  # fmt: skip
    per_window = continuation_nll(model, windows, policy, settings.continuation_tokens, settings.batch_size)
    mean = math.fsum(per_window) / len(per_window)
    prompt = windows[:1, :prompt_len]
    with torch.inference_mode():
        warm_up = prompt[:, : min(prompt_len, 16)]
        _generate_once(model, policy, warm_up, min(settings.generate_tokens, 2))
        runs = [
            _generate_once(model, policy, prompt, settings.generate_tokens)
            for _ in range(max(1, settings.repeats))
        ]
    seconds = statistics.median(r[2] for r in runs)
    rate = settings.generate_tokens / seconds if seconds > 0 else math.inf
    split = policy.split(prompt_len) if policy is not None else None
    return CacheEval(
        policy=policy.name if policy is not None else "full", windows=windows.shape[0], prompt_tokens=prompt_len,
        continuation_tokens=settings.continuation_tokens, budget_tokens=split.total if split else None,
        recent_tokens=split.recent if split else None, ppl=math.exp(mean) if mean < 700 else math.inf, nll=mean,
        window_nll=per_window,
        generate_tokens=settings.generate_tokens, cache_bytes_prompt=runs[-1][0], cache_bytes_end=runs[-1][1],
        decode_tokens_per_s=rate, threads=torch.get_num_threads(),
        decode_speedup=rate / dense.decode_tokens_per_s if dense is not None and dense.decode_tokens_per_s else None,
    )  # fmt: skip
