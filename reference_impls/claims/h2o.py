"""H2O: a KV cache of heavy hitters (accumulated attention) and recent tokens, against a recent window."""

from __future__ import annotations

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict
from ._kit import below, note, verdict, vs
from .baselines import KV_BASELINES, KV_DATA

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("h2o", "reference_impls.h2o", "kv-cache",
               "KV cache of heavy hitters (accumulated attention) plus recent tokens", False, ("kv_budget",),
               paper="h2o"),
)  # fmt: skip


def _claim(r: Results) -> Verdict:
    full = r.cache_ppl("dense")
    h2o = vs(
        "h2o",
        r.cache_ppl("h2o"),
        below("window", r.cache_ppl("window")),
        below("full cache", full, 1.5, strict=False),
    )
    return verdict(h2o.wrap("continuation ppl "), note(f"sink {r.cache_ppl('sink'):.2f}, full {full:.2f}"))


PAPER = PaperSpec(
    paper="h2o",
    method="h2o",
    runs=(*KV_BASELINES, Run("h2o", "h2o")),
    claim="With a KV cache of {kv_budget:.0%} of the 256-token prompt, half heavy hitters and half recent tokens "
    "(the default 25% is 64 entries, 20% of the 320-token sequence: the H2O paper counts its budget as 10% heavy "
    "hitters + 10% recent tokens of the sequence length), H2O's continuation perplexity is below that of a "
    "window of the same number of recent tokens and at most 1.5x the full cache's (H2O paper: 20% of the cache "
    "keeps accuracy where the window alone collapses)",
    check=_claim,
    defaults={"kv_budget": 0.25, **KV_DATA},
    metrics=("cache",),
    draws=1,  # pre-registered near its bound, but nothing is drawn: no calibration data, no seed
)
