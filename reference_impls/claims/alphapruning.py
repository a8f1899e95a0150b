"""AlphaPruning: per-layer sparsity from the heavy-tailed ESD exponent of the weights, on top of Wanda, at 70%."""

from __future__ import annotations

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict
from ._kit import below, note, verdict, vs

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("alphapruning", "reference_impls.alphapruning", "allocation",
               "per-layer sparsity from each layer's heavy-tailed ESD exponent (Hill alpha), then Wanda, magnitude "
               "or SparseGPT", True, ("sparsity",), paper="alphapruning"),
)  # fmt: skip


def _claim(r: Results) -> Verdict:
    alpha = r.ppl("alphapruning-wanda")
    parts = [vs("alphapruning-wanda", alpha, below("uniform wanda", r.ppl("wanda"), 0.8))]
    if "owl-wanda" in r.labels():  # context only: the paper also reports AlphaPruning below OWL
        owl = float(r.ppl("owl-wanda"))
        parts.append(
            note(f"owl-wanda {owl:.2f}, alphapruning-wanda / owl-wanda {float(alpha) / owl:.3g} (not judged)")
        )
    return verdict(*parts)


PAPER = PaperSpec(
    paper="alphapruning",
    method="alphapruning",
    runs=(
        Run("wanda", "wanda"),
        Run("alphapruning-wanda", "alphapruning", {"base": "wanda"}),
        Run("owl-wanda", "owl", {"base": "wanda"}, extra=True),  # the paper's other non-uniform allocation
    ),
    claim="At {sparsity:.0%} sparsity, Wanda with AlphaPruning's per-layer ratios (from the Hill estimate of each "
    "layer's eigenvalue-spectrum tail, epsilon 0.3; the allocation reads no data) reaches a perplexity below 0.8x "
    "that of Wanda at the same uniform ratio in every layer (AlphaPruning paper, LLaMA and LLaMA-2 at 70%: far "
    "below uniform Wanda, and below OWL, which runs here as context and is not judged). Epsilon is upstream's "
    "default for Wanda, not tuned for this model, and Wanda calibrates on 16 x 512 tokens, not 128 x 2048",
    check=_claim,
    defaults={"sparsity": 0.7},
)
