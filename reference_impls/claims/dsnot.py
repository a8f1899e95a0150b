"""DSnoT: training-free prune-and-grow swaps that refine Wanda's mask, at 60% and 70% sparsity."""

from __future__ import annotations

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict, finite

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("dsnot", "reference_impls.dsnot", "weight-sparsity",
               "Wanda mask refined by training-free prune-and-grow swaps (weights unchanged)", True, ("sparsity",),
               paper="dsnot"),
)  # fmt: skip


def _claim(r: Results) -> Verdict:
    w6, d6, w7, d7 = r.ppl("wanda-60"), r.ppl("dsnot-60"), r.ppl("wanda-70"), r.ppl("dsnot-70")
    holds = finite(w6, d6, w7, d7) and d6 < w6 and d7 < w7 and (w7 - d7) > (w6 - d6)
    return holds, (f"60%: wanda {w6:.2f} -> +dsnot {d6:.2f} (gain {w6 - d6:.2f}); "
                   f"70%: wanda {w7:.2f} -> +dsnot {d7:.2f} (gain {w7 - d7:.2f})")  # fmt: skip


PAPER = PaperSpec(
    paper="dsnot",
    method="dsnot",
    runs=(
        Run("wanda-60", "wanda", {"sparsity": 0.6}),
        Run("dsnot-60", "dsnot", {"sparsity": 0.6}),
        Run("wanda-70", "wanda", {"sparsity": 0.7}),
        Run("dsnot-70", "dsnot", {"sparsity": 0.7}),
    ),
    claim="Refining Wanda's mask with DSnoT (same number of zeros per row, no weight changed) lowers "
    "perplexity at 60% and at 70% sparsity, and gains more at 70% (DSnoT paper: -26.79 perplexity at 70% on "
    "LLaMA-7B)",
    check=_claim,
)
