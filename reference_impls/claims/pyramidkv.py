"""PyramidKV: SnapKV's one-time prompt cut with per-layer budgets shaped as a pyramid, against uniform SnapKV at
the same total budget."""

from __future__ import annotations

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict
from ._kit import below, note, verdict, vs
from .baselines import KV_DATA

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("pyramidkv", "reference_impls.pyramidkv", "kv-cache",
               "SnapKV's one-time prompt cut with per-layer budgets shaped as a pyramid (more entries low)", False,
               ("kv_budget",), paper="pyramidkv"),
)  # fmt: skip

WINDOW = (
    8  # KVCache-Factory's LongBench runs use an 8-token observation window for SnapKV and PyramidKV alike
)


def _claim(r: Results) -> Verdict:
    pyramid, full = r.cache_ppl("pyramidkv"), r.cache_ppl("dense")
    ppl = vs("pyramidkv", pyramid, below("uniform snapkv", r.cache_ppl("snapkv")))
    return verdict(ppl.wrap("continuation ppl "), note(f"full cache {float(full):.2f}"))


PAPER = PaperSpec(
    paper="pyramidkv",
    method="pyramidkv",
    runs=(
        Run("snapkv", "snapkv", {"window_size": WINDOW}),
        Run("pyramidkv", "pyramidkv"),
    ),
    claim="With a small cache cut once after the 256-token prompt, {kv_budget:.1%} of it per layer on average (the "
    "default is 32 entries: the 8-token observation window plus 24 voted positions, max-pooled with kernel 7), "
    "PyramidKV's continuation perplexity is below uniform SnapKV's at the same total; PyramidKV gives the 30 "
    "layers 47 down to 1 voted entries (beta 20), SnapKV 24 each, and both keep every continuation token "
    "afterwards, so the two caches hold the same number of entries at every step (PyramidKV paper: the pyramid "
    "helps most at the smallest budget, 128 entries per layer on LongBench, whose LLaMA-3 prompts its script cuts "
    "at 7.5K tokens, so under 2% of a full-length prompt; ours are 256 tokens, so 32 entries are a larger share)",
    check=_claim,
    defaults={"kv_budget": 0.125, **KV_DATA},
    metrics=("cache",),
)
