"""CPU speed and KV-cache size of a model: prefill latency on a fixed prompt and greedy decode rate.

Protocol: one warm-up, then `repeats` timed runs (median reported). Each run feeds the prompt once with the
cache on (prefill), then decodes `decode_tokens` tokens one at a time, each from the previous argmax (no
sampling, no `generate` overheads such as stopping criteria). The same thread count is used for every
model of a comparison, so ratios against dense measured in the same process are meaningful; absolute
numbers are this machine's. Tests never assert them.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from .kvcache import cache_bytes, cache_kwarg, output_cache
from .layerwise import input_embedding


@dataclass(frozen=True)
class SpeedSample:
    prompt_tokens: int
    decode_tokens: int
    repeats: int
    threads: int
    prefill_ms: float
    decode_tokens_per_s: float
    kv_cache_bytes: int


def _one_run(model: nn.Module, prompt: torch.Tensor, decode_tokens: int) -> tuple[float, float, int]:
    key = cache_kwarg(model)
    start = time.perf_counter()
    out = model(input_ids=prompt, use_cache=True)
    prefill = time.perf_counter() - start
    cache = output_cache(out)
    token = out.logits[:, -1:].argmax(-1)
    start = time.perf_counter()
    for _ in range(decode_tokens):
        out = model(input_ids=token, use_cache=True, **{key: cache})
        cache = output_cache(out)
        token = out.logits[:, -1:].argmax(-1)
    decode = time.perf_counter() - start
    return prefill, decode, cache_bytes(cache)


def measure_speed(
    model: nn.Module, prompt: torch.Tensor, *, decode_tokens: int = 32, repeats: int = 3
) -> SpeedSample:
    """`prompt`: (1, P) token ids. Median prefill time and decode rate over `repeats` runs after a warm-up."""
    device = input_embedding(model).weight.device
    prompt = prompt.to(device)
    prefills, decodes = [], []
    kv = 0
    with torch.inference_mode():
        _one_run(model, prompt, min(decode_tokens, 4))  # warm-up: allocator, kernels
        for _ in range(max(1, repeats)):
            prefill, decode, kv = _one_run(model, prompt, decode_tokens)
            prefills.append(prefill)
            decodes.append(decode)
    decode_s = statistics.median(decodes)
    return SpeedSample(
        prompt_tokens=prompt.shape[1], decode_tokens=decode_tokens, repeats=max(1, repeats),
        threads=torch.get_num_threads(), prefill_ms=1000 * statistics.median(prefills),
        decode_tokens_per_s=decode_tokens / decode_s if decode_s > 0 else float("inf"), kv_cache_bytes=kv,
    )  # fmt: skip
