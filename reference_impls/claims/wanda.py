"""Wanda: pruning by weight magnitude times input-feature norm, against magnitude pruning."""

from __future__ import annotations

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict
from ._kit import below, verdict, vs

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("wanda", "reference_impls.wanda", "weight-sparsity",
               "|W| x input-feature norm, per output row", True, ("sparsity", "pattern"), paper="wanda"),
)  # fmt: skip


def _claim(r: Results) -> Verdict:
    return verdict(vs("wanda", r.ppl("wanda"), below("magnitude", r.ppl("magnitude"), 0.5)))


PAPER = PaperSpec(
    paper="wanda",
    method="wanda",
    runs=(Run("magnitude", "magnitude"), Run("wanda", "wanda")),
    claim="Wanda's perplexity is less than half of magnitude pruning's at the same sparsity "
    "(Wanda paper: magnitude collapses, Wanda stays near dense)",
    check=_claim,
    defaults={"sparsity": 0.5},
)
