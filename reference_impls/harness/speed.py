"""CPU speed and KV-cache size of a model: prefill latency on a fixed prompt and greedy decode rate.

Protocol: one warm-up, then `repeats` timed runs (median reported). Each run feeds the prompt once with the
cache on (prefill), then decodes `decode_tokens` tokens one at a time, each from the previous argmax (no
sampling, no `generate` overheads such as stopping criteria). The same thread count is used for every
model of a comparison, so ratios against dense measured in the same process are meaningful; absolute
numbers are this machine's. Tests never assert them.

`against=dense` times the dense model alternately with the measured one (dense, model, model, dense, ...: each
pair's order flips, so a drift of the machine falls on both sides) and keeps each pair's ratio: the repeats a
claim's interval on a speed-up resamples (`registry.measured`).
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
    prefill_ratios: tuple[float, ...] = ()  # with `against`: dense prefill time / this one, pair by pair
    decode_ratios: tuple[float, ...] = ()  # with `against`: this decode rate / the dense one, pair by pair


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
    model: nn.Module,
    prompt: torch.Tensor,
    *,
    decode_tokens: int = 32,
    repeats: int = 3,
    against: nn.Module | None = None,
) -> SpeedSample:
    """`prompt`: (1, P) token ids. Median prefill time and decode rate over `repeats` runs after a warm-up; with
    `against`, each run is paired with a run of that model (see the module) and the pairs' ratios are kept."""
    device = input_embedding(model).weight.device
    prompt = prompt.to(device)
    prefills, decodes, prefill_ratios, decode_ratios = [], [], [], []
    kv = 0
    with torch.inference_mode():
        _one_run(model, prompt, min(decode_tokens, 4))  # warm-up: allocator, kernels
        if against is not None:
            _one_run(against, prompt, min(decode_tokens, 4))
        for i in range(max(1, repeats)):
            if against is not None and i % 2 == 0:
                base = _one_run(against, prompt, decode_tokens)
            prefill, decode, kv = _one_run(model, prompt, decode_tokens)
            if against is not None and i % 2 == 1:
                base = _one_run(against, prompt, decode_tokens)
            prefills.append(prefill)
            decodes.append(decode)
            if against is not None:
                prefill_ratios.append(base[0] / prefill if prefill > 0 else float("inf"))
                decode_ratios.append(
                    base[1] / decode if decode > 0 else float("inf")
                )  # rate ratio: time ratio
    decode_s = statistics.median(decodes)
    return SpeedSample(
        prompt_tokens=prompt.shape[1], decode_tokens=decode_tokens, repeats=max(1, repeats),
        threads=torch.get_num_threads(), prefill_ms=1000 * statistics.median(prefills),
        decode_tokens_per_s=decode_tokens / decode_s if decode_s > 0 else float("inf"), kv_cache_bytes=kv,
        prefill_ratios=tuple(prefill_ratios), decode_ratios=tuple(decode_ratios),
    )  # fmt: skip
