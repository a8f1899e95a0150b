"""Keyformer: a KV cache of key tokens (accumulated Gumbel-softmax score) and recent tokens, against a
recent-token window and H2O."""

from __future__ import annotations

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict
from ._kit import below, note, verdict, vs
from .baselines import KV_BASELINES, KV_DATA

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("keyformer", "reference_impls.keyformer", "kv-cache",
               "KV cache of key tokens (accumulated Gumbel-softmax score) plus recent tokens", False, ("kv_budget",),
               paper="keyformer"),
)  # fmt: skip


def _claim(r: Results) -> Verdict:
    full = r.cache_ppl("dense")
    keyformer = vs(
        "keyformer",
        r.cache_ppl("keyformer"),
        below("window", r.cache_ppl("window"), strict=False),
        below("full cache", full, 1.1, strict=False),
    )
    h2o = note(
        f"reported, not asserted: h2o {r.cache_ppl('h2o'):.2f} (sink {r.cache_ppl('sink'):.2f}, full {full:.2f})"
    )
    return verdict(keyformer.wrap("continuation ppl "), h2o)


PAPER = PaperSpec(
    paper="keyformer",
    method="keyformer",
    runs=(*KV_BASELINES, Run("h2o", "h2o"), Run("keyformer", "keyformer")),
    claim="With a KV cache of {kv_budget:.0%} of the prompt (30% recent tokens, 70% key tokens), Keyformer's "
    "continuation perplexity is at most that of a window of the same size and within 10% of the full cache's "
    "(Keyformer paper: 50% of the prompt cache keeps about 99% of the baseline accuracy); Keyformer vs H2O at "
    "the same budget is reported, not asserted",
    check=_claim,
    defaults={"kv_budget": 0.5, **KV_DATA},
    metrics=("cache",),
)
