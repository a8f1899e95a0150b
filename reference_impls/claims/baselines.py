"""Baseline methods that belong to no paper (`paper=None`) but that several comparisons run as an arm.

- `magnitude`: the smallest weights of each matrix, no data (Wanda, SparseGPT, OWL, RIA).
- `window`: a KV cache of the most recent tokens, optionally with StreamingLLM's first-token sinks (H2O,
  Keyformer); `KV_BASELINES` are the two arms built on it and `KV_DATA` the data budget of a KV-cache
  comparison.

A result depends on this file when one of its runs uses a method declared here.
"""

from __future__ import annotations

from ..registry.specs import MethodSpec, Run

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("magnitude", "reference_impls.magnitude", "weight-sparsity",
               "smallest |W| per matrix (baseline, no data)", False, ("sparsity", "pattern")),
    MethodSpec("window", "reference_impls.kv_window", "kv-cache",
               "KV cache of the most recent tokens, optionally plus StreamingLLM's first-token sinks (baseline)",
               False, ("kv_budget",)),
)  # fmt: skip

KV_DATA = {"seqlen": 320, "eval_tokens": 10240}  # 32 windows of a 256-token prompt + 64-token continuation
KV_BASELINES = (Run("window", "window"), Run("sink", "window", {"sink_tokens": 4}))
