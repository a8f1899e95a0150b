"""Size metrics of a model, and `measure`, which gathers every metric a run asks for into `Metrics`.

Perplexity, probe and CPU speed are measured on the model as it is; the KV-cache evaluation
(`cacheeval.evaluate_cache`) runs the cache policy `measure` is given (a kv-cache method's, which the harness
gets from `apply_method`; none: the full cache, as for the dense baseline).

Sizes count each tensor once (tied input/output embeddings are one tensor), so `weight_bytes` is what a
safetensors save writes for the weights (headers aside). "Non-embedding" leaves out the input embedding
and an untied LM head; "decoder" is what the decoder layers hold.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable
from typing import Any

import torch
from torch import nn

from kb.results import CacheEval, Metrics, Probe, Size, Speed

from .cacheeval import CacheSettings, evaluate_cache
from .evaluate import ppl_of, window_nll
from .eviction import CachePolicy
from .layerwise import decoder_layers, input_embedding, iter_decoder_linears, output_embedding
from .probe import ProbeScore, TokenTask, score_task
from .speed import SpeedSample, measure_speed

# `once(kind, key, compute) -> (value, seconds)`: how `measure_dense` reuses measurements (harness.session)
Once = Callable[[str, Hashable, Callable[[], Any]], tuple[Any, float]]


def _unique(params: Any) -> dict[int, torch.Tensor]:
    return {id(p): p for p in params}


def model_size(model: nn.Module) -> Size:
    everything = _unique(model.parameters())
    embeddings = {id(input_embedding(model).weight)}
    head = output_embedding(model) if hasattr(model, "get_output_embeddings") else None
    if head is not None:
        embeddings.add(id(head.weight))
    decoder = _unique(decoder_layers(model).parameters())
    zeros = total = 0
    for _name, linear in iter_decoder_linears(model):
        zeros += int((linear.weight == 0).sum())
        total += linear.weight.numel()
    return Size(
        params_total=sum(p.numel() for p in everything.values()),
        params_non_embedding=sum(p.numel() for k, p in everything.items() if k not in embeddings),
        params_decoder=sum(p.numel() for p in decoder.values()),
        weight_bytes=sum(p.numel() * p.element_size() for p in everything.values()),
        decoder_sparsity=zeros / total if total else 0.0,
        layers=len(decoder_layers(model)),
    )


def _geomean(ratios: tuple[float, ...]) -> float:
    return math.exp(math.fsum(math.log(r) for r in ratios) / len(ratios))


def speed_record(sample: SpeedSample, dense: SpeedSample | None) -> Speed:
    """The record of a speed sample; its speed-ups are the geometric means of the paired ratios when the sample
    was timed alternately with the dense model, else the ratios of medians against `dense`."""
    prefill = decode = None
    if sample.decode_ratios:
        prefill, decode = _geomean(sample.prefill_ratios), _geomean(sample.decode_ratios)
    elif dense is not None:
        prefill = dense.prefill_ms / sample.prefill_ms
        decode = sample.decode_tokens_per_s / dense.decode_tokens_per_s
    return Speed(
        prompt_tokens=sample.prompt_tokens, decode_tokens=sample.decode_tokens, repeats=sample.repeats,
        threads=sample.threads, prefill_ms=sample.prefill_ms, decode_tokens_per_s=sample.decode_tokens_per_s,
        kv_cache_bytes=sample.kv_cache_bytes, prefill_speedup=prefill, decode_speedup=decode,
        prefill_ratios=list(sample.prefill_ratios), decode_ratios=list(sample.decode_ratios),
    )  # fmt: skip


def probe_record(s: ProbeScore) -> Probe:
    return Probe(task=s.task, items=s.items, choices=s.choices, acc=s.acc, acc_norm=s.acc_norm,
                 hits_norm=[1 if hit else 0 for hit in s.hits_norm])  # fmt: skip


def measure_dense(
    model: nn.Module,
    once: Once,
    *,
    eval_windows: torch.Tensor | None,
    eval_batch_size: int = 1,
    task: TokenTask | None = None,
    task_key: Hashable = None,
    speed_prompt: torch.Tensor | None = None,
    speed_repeats: int = 3,
    cache_windows: torch.Tensor | None = None,
    cache: CacheSettings | None = None,
) -> tuple[Metrics, SpeedSample | None, float]:
    """`measure` of the dense model, each metric through `once` keyed by what it depends on (besides the model
    and data, which the caller's keys already cover), so a process measures a baseline once for many papers.
    Seconds are those each metric took when it was computed."""
    seconds = 0.0
    nll: list[float] = []
    probe = sample = cache_eval = None
    if eval_windows is not None:
        nll, t = once(
            "ppl", eval_batch_size, lambda: window_nll(model, eval_windows, batch_size=eval_batch_size)
        )
        seconds += t
    if task is not None:
        probe, t = once("probe", task_key, lambda: probe_record(score_task(model, task)))
        seconds += t
    if speed_prompt is not None:
        key = (tuple(speed_prompt.shape), speed_repeats, torch.get_num_threads())
        sample, t = once("speed", key, lambda: measure_speed(model, speed_prompt, repeats=speed_repeats))
        seconds += t
    if cache is not None and cache_windows is not None:
        cache_eval, t = once("cache", (cache, torch.get_num_threads()),
                             lambda: evaluate_cache(model, cache_windows, cache, policy=None))  # fmt: skip
        seconds += t
    speed = speed_record(sample, None) if sample is not None else None
    metrics = Metrics(ppl=ppl_of(nll) if nll else None, window_nll=nll, probe=probe, size=model_size(model),
                      speed=speed, cache=cache_eval)  # fmt: skip
    return metrics, sample, seconds


def measure(
    model: nn.Module,
    *,
    eval_windows: torch.Tensor | None,
    eval_batch_size: int = 1,
    task: TokenTask | None = None,
    speed_prompt: torch.Tensor | None = None,
    dense_speed: SpeedSample | None = None,
    speed_repeats: int = 3,
    speed_against: nn.Module | None = None,
    cache_windows: torch.Tensor | None = None,
    cache: CacheSettings | None = None,
    cache_policy: CachePolicy | None = None,
    dense_cache: CacheEval | None = None,
) -> tuple[Metrics, SpeedSample | None, float]:
    """Every metric that applies; returns (metrics, the raw speed sample, seconds spent). Speed is timed
    alternately with `speed_against` (the dense model) when given. With `cache` and `cache_windows`, the
    long-context cache evaluation too, under `cache_policy` (None: the full cache), its decode speed-up against
    `dense_cache`."""
    start = time.perf_counter()
    nll = window_nll(model, eval_windows, batch_size=eval_batch_size) if eval_windows is not None else []
    probe = probe_record(score_task(model, task)) if task is not None else None
    sample = None
    if speed_prompt is not None:
        sample = measure_speed(model, speed_prompt, repeats=speed_repeats, against=speed_against)
    speed = speed_record(sample, dense_speed) if sample is not None else None
    cache_eval = None
    if cache is not None and cache_windows is not None:
        cache_eval = evaluate_cache(model, cache_windows, cache, cache_policy, dense_cache)
    metrics = Metrics(ppl=ppl_of(nll) if nll else None, window_nll=nll, probe=probe, size=model_size(model),
                      speed=speed, cache=cache_eval)  # fmt: skip
    return metrics, sample, time.perf_counter() - start
