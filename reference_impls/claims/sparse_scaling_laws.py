"""Sparse scaling laws (kind `training`, an honest stand-in): a law and its fit, not a pruning algorithm.

The run trains its own tiny sparse sweep from scratch, fits the law and reads the compute-optimal sparsity off
the fit; the `--model` is left untouched and its perplexity says nothing here (`metrics=()`).
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict
from ._kit import check, details, fail, note, verdict

if TYPE_CHECKING:
    from kb.results import Figure

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("sparse-scaling-laws", "reference_impls.sparse_scaling_laws", "training",
               "trains a tiny sparse sweep from scratch (GMP) and fits the sparse scaling law; prunes no model",
               False, (), paper="sparse-scaling-laws"),
)  # fmt: skip


def _claim(r: Results) -> Verdict:
    d = details(r, "sweep")
    s_opt, budgets, points = d.get("optimal_sparsity", []), d.get("budgets", []), d.get("points", [])
    if not s_opt or not points:
        return fail("the sweep reported no fit")
    longest = max(p["steps"] for p in points)
    at_longest = {p["sparsity"]: p["eval_loss"] for p in points if p["steps"] == longest}
    dense, sparsest = at_longest.get(0.0, math.nan), at_longest[max(at_longest)]
    grows = s_opt[-1] >= s_opt[0] + 0.1 and all(b >= a for a, b in itertools.pairwise(s_opt))
    rmse = d.get("fit_rmse_log_loss", math.nan)
    swept = d.get("swept_budgets", [math.nan])[-1]
    return verdict(
        check(grows, f"fitted optimal sparsity {s_opt[0]:.2f} at {budgets[0]:.3g} to {s_opt[-1]:.2f} at "
                     f"{budgets[-1]:.3g} (10^12 FLOPs of dense-shape training; swept up to {swept:.3g})"),
        check(sparsest < dense, f"at {longest} steps held-out loss S={max(at_longest):.2f} {sparsest:.4f} vs dense "
                                f"{dense:.4f} at equal non-zeros"),
        check(rmse <= 0.03, f"fit RMSE of log-loss {rmse:.4f} (<= 0.03)"),
        note("exact: properties of one fitted sweep, not resampled"),
    )  # fmt: skip


def _figures(r: Results) -> list[Figure]:
    from kb.results import Figure, Series

    d = details(r, "sweep")
    if not d:
        return []
    series = []
    for s in sorted({p["sparsity"] for p in d["points"]}):
        pts = sorted((p["tokens"] / 1e6, p["eval_loss"]) for p in d["points"] if p["sparsity"] == s)
        series.append(Series(label=f"measured S={s:.2f}", x=[x for x, _ in pts], y=[y for _, y in pts]))
    for s, curve in sorted(d.get("fit_curves", {}).items(), key=lambda kv: float(kv[0])):
        series.append(Series(label=f"fitted law S={float(s):.2f}", x=curve["tokens"], y=curve["loss"]))
    return [
        Figure(
            key="loss-vs-tokens",
            title="Held-out loss of the sweep and the fitted law (equal non-zeros)",
            x_label="training tokens (millions of bytes)",
            y_label="held-out loss (nats per byte)",
            series=series,
            x_log=True,
        ),
        Figure(
            key="optimal-sparsity",
            title="Compute-optimal sparsity read off the fitted law",
            x_label="training compute 6 N D / (1 - S) (10^12 FLOPs)",
            y_label="optimal sparsity",
            series=[Series(label="fitted law", x=d["budgets"], y=d["optimal_sparsity"])],
            x_log=True,
        ),
    ]


PAPER = PaperSpec(
    paper="sparse-scaling-laws",
    method="sparse-scaling-laws",
    runs=(Run("sweep", "sparse-scaling-laws"),),
    claim="Stand-in (a law and its fit, no billion-token training): byte-level 2-layer LLaMAs with equal "
    "non-zero weights at sparsity 0, 0.5 and 0.75, each trained from scratch with gradual magnitude pruning for "
    "three step counts; the paper's law fitted to their held-out losses (RMSE of log-loss at most 0.03) puts the "
    "compute-optimal sparsity at 1000x the largest swept budget at least 0.1 above that at the smallest, never "
    "falling in between, and at the longest training the sparsest model beats the dense one at equal non-zeros "
    "(paper: optimal sparsity grows with the training budget)",
    check=_claim,
    metrics=(),
    figures=_figures,
)
