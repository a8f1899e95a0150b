"""SparseGPT: a second-order (OBS) mask with weight updates, against magnitude pruning and Wanda."""

from __future__ import annotations

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict
from ._kit import below, verdict, vs

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("sparsegpt", "reference_impls.sparsegpt", "weight-sparsity",
               "second-order (OBS) mask and weight update", True, ("sparsity", "pattern"), paper="sparsegpt"),
)  # fmt: skip


def _claim(r: Results) -> Verdict:
    s, w, m = r.ppl("sparsegpt"), r.ppl("wanda"), r.ppl("magnitude")
    return verdict(vs("sparsegpt", s, below("magnitude", m, 0.7), below("wanda", w, 1.1, strict=False)))


PAPER = PaperSpec(
    paper="sparsegpt",
    method="sparsegpt",
    runs=(Run("magnitude", "magnitude"), Run("wanda", "wanda"), Run("sparsegpt", "sparsegpt")),
    claim="SparseGPT's perplexity is below 0.7x magnitude's and at most 1.1x Wanda's at the same sparsity "
    "(the Wanda paper reports SparseGPT ahead of or level with Wanda on smaller models)",
    check=_claim,
    defaults={"sparsity": 0.5},
)
