"""KV-cache eviction policies: the recent-token window (and StreamingLLM sinks), H2O, Keyformer."""

from __future__ import annotations

from .specs import MethodSpec, PaperSpec, Results, Run, Verdict, finite

_KV_DATA = {"seqlen": 320, "eval_tokens": 2560}  # 8 windows of a 256-token prompt + 64-token continuation
_KV_BASELINES = (Run("window", "window"), Run("sink", "window", {"sink_tokens": 4}))

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("window", "reference_impls.kv_window", "kv-cache",
               "KV cache of the most recent tokens, optionally plus StreamingLLM's first-token sinks (baseline)",
               False, ("kv_budget",)),
    MethodSpec("h2o", "reference_impls.h2o", "kv-cache",
               "KV cache of heavy hitters (accumulated attention) plus recent tokens", False, ("kv_budget",),
               paper="h2o"),
    MethodSpec("keyformer", "reference_impls.keyformer", "kv-cache",
               "KV cache of key tokens (accumulated Gumbel-softmax score) plus recent tokens", False, ("kv_budget",),
               paper="keyformer"),
)  # fmt: skip


def _h2o_claim(r: Results) -> Verdict:
    h, w, full = r.cache_ppl("h2o"), r.cache_ppl("window"), r.cache_ppl("dense")
    holds = finite(h, w, full) and h < w and h <= 1.5 * full
    return holds, (f"continuation ppl h2o {h:.2f} vs window {w:.2f} and 1.5 x full cache {1.5 * full:.2f} "
                   f"(sink {r.cache_ppl('sink'):.2f}, full {full:.2f})")  # fmt: skip


def _keyformer_claim(r: Results) -> Verdict:
    k, w, full, h = r.cache_ppl("keyformer"), r.cache_ppl("window"), r.cache_ppl("dense"), r.cache_ppl("h2o")
    holds = finite(k, w, full) and k <= w and k <= 1.1 * full
    reason = (
        f"continuation ppl keyformer {k:.2f} vs window {w:.2f} and 1.1 x full cache {1.1 * full:.2f}; "
        f"reported, not asserted: h2o {h:.2f} (sink {r.cache_ppl('sink'):.2f}, full {full:.2f})"
    )
    return holds, reason


PAPERS: tuple[PaperSpec, ...] = (
    PaperSpec(
        paper="h2o",
        method="h2o",
        runs=(*_KV_BASELINES, Run("h2o", "h2o")),
        claim="With a KV cache of {kv_budget:.0%} of the prompt (half heavy hitters, half recent tokens), H2O's "
        "continuation perplexity is below that of a window of the same number of recent tokens and at most 1.5x "
        "the full cache's (H2O paper: 20% of the cache keeps accuracy where the window alone collapses)",
        check=_h2o_claim,
        defaults={"kv_budget": 0.2, **_KV_DATA},
        metrics=("cache",),
    ),
    PaperSpec(
        paper="keyformer",
        method="keyformer",
        runs=(*_KV_BASELINES, Run("h2o", "h2o"), Run("keyformer", "keyformer")),
        claim="With a KV cache of {kv_budget:.0%} of the prompt (30% recent tokens, 70% key tokens), Keyformer's "
        "continuation perplexity is at most that of a window of the same size and within 10% of the full cache's "
        "(Keyformer paper: 50% of the prompt cache keeps about 99% of the baseline accuracy); Keyformer vs H2O at "
        "the same budget is reported, not asserted",
        check=_keyformer_claim,
        defaults={"kv_budget": 0.5, **_KV_DATA},
        metrics=("cache",),
    ),
)
