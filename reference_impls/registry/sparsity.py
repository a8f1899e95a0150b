"""Weight sparsity and per-layer allocation: magnitude, Wanda, SparseGPT, OWL."""

from __future__ import annotations

from .specs import MethodSpec, PaperSpec, Results, Run, Verdict, finite

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("magnitude", "reference_impls.magnitude", "weight-sparsity",
               "smallest |W| per matrix (baseline, no data)", False, ("sparsity", "pattern")),
    MethodSpec("wanda", "reference_impls.wanda", "weight-sparsity",
               "|W| x input-feature norm, per output row", True, ("sparsity", "pattern"), paper="wanda"),
    MethodSpec("sparsegpt", "reference_impls.sparsegpt", "weight-sparsity",
               "second-order (OBS) mask and weight update", True, ("sparsity", "pattern"), paper="sparsegpt"),
    MethodSpec("owl", "reference_impls.owl", "allocation",
               "outlier-weighted per-layer sparsity, then Wanda or SparseGPT", True, ("sparsity",), paper="owl"),
)  # fmt: skip


def _wanda_claim(r: Results) -> Verdict:
    w, m = r.ppl("wanda"), r.ppl("magnitude")
    return finite(w, m) and w < 0.5 * m, f"wanda {w:.2f} vs 0.5 x magnitude {0.5 * m:.2f}"


def _sparsegpt_claim(r: Results) -> Verdict:
    s, w, m = r.ppl("sparsegpt"), r.ppl("wanda"), r.ppl("magnitude")
    holds = finite(s, w, m) and s < 0.7 * m and s <= 1.1 * w
    return holds, f"sparsegpt {s:.2f} vs 0.7 x magnitude {0.7 * m:.2f} and 1.1 x wanda {1.1 * w:.2f}"


def _owl_claim(r: Results) -> Verdict:
    o, w = r.ppl("owl-wanda"), r.ppl("wanda")
    return finite(o, w) and o < 0.8 * w, f"owl-wanda {o:.2f} vs 0.8 x uniform wanda {0.8 * w:.2f}"


PAPERS: tuple[PaperSpec, ...] = (
    PaperSpec(
        paper="wanda",
        method="wanda",
        runs=(Run("magnitude", "magnitude"), Run("wanda", "wanda")),
        claim="Wanda's perplexity is less than half of magnitude pruning's at the same sparsity "
        "(Wanda paper: magnitude collapses, Wanda stays near dense)",
        check=_wanda_claim,
        defaults={"sparsity": 0.5},
    ),
    PaperSpec(
        paper="sparsegpt",
        method="sparsegpt",
        runs=(Run("magnitude", "magnitude"), Run("wanda", "wanda"), Run("sparsegpt", "sparsegpt")),
        claim="SparseGPT's perplexity is below 0.7x magnitude's and at most 1.1x Wanda's at the same sparsity "
        "(the Wanda paper reports SparseGPT ahead of or level with Wanda on smaller models)",
        check=_sparsegpt_claim,
        defaults={"sparsity": 0.5},
    ),
    PaperSpec(
        paper="owl",
        method="owl",
        runs=(
            Run("magnitude", "magnitude"),
            Run("wanda", "wanda"),
            Run("owl-wanda", "owl", {"base": "wanda"}),
            Run("sparsegpt", "sparsegpt", extra=True),  # the paper's second base; not in the claim
            Run("owl-sparsegpt", "owl", {"base": "sparsegpt"}, extra=True),
        ),
        claim="At {sparsity:.0%} sparsity, Wanda with OWL's outlier-weighted per-layer ratios reaches a "
        "perplexity below 0.8x that of Wanda at the same uniform ratio in every layer "
        "(OWL paper: 85.8 -> 24.6 on LLaMA-7B)",
        check=_owl_claim,
        defaults={"sparsity": 0.7},
    ),
)
