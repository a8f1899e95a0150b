"""Essential sparsity: one-shot global magnitude pruning swept from 10% to 90%, and the knee of the curve."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..registry.specs import MethodSpec, PaperSpec, Part, Results, Run, Verdict
from ._kit import above, below, compare, verdict, vs

if TYPE_CHECKING:
    from kb.results import Figure

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("global-magnitude", "reference_impls.essential_sparsity", "weight-sparsity",
               "smallest |W| under one threshold shared by all decoder linears (no data)", False, ("sparsity",),
               paper="essential-sparsity"),
)  # fmt: skip

SWEEP = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # the dense model is the 0% point
BAND = 0.10  # "within a small band of dense" = perplexity at most 1.10 x dense


def knee(points: Sequence[tuple[float, float]], dense: float, tolerance: float) -> float:
    """The essential sparsity: the largest swept sparsity up to which every point (sparsity, perplexity) stays
    within (1 + tolerance) x dense; 0.0 when the first point is already outside. The same rule as
    `reference_impls.essential_sparsity.essential_sparsity`, kept here so that the claim imports no torch."""
    found = 0.0
    for s, ppl in sorted(points):
        if not ppl <= (1.0 + tolerance) * dense:  # a nan perplexity ends the band too
            break
        found = s
    return found


def sweep_label(s: float) -> str:
    return f"sparsity-{round(100 * s)}"


def _points(r: Results) -> Sequence[tuple[float, float]]:
    return [(0.0, r.ppl("dense"))] + [(s, r.ppl(sweep_label(s))) for s in SWEEP]


def _claim(r: Results) -> Verdict:
    pts = _points(r)
    ppl = [p for _s, p in pts]
    dense = ppl[0]
    essential = knee(pts, dense, BAND)
    first, last = ppl[1] - ppl[0], ppl[-1] - ppl[-2]
    monotone = Part(
        f"monotone (each point at least {1 - 1e-3:g} x the one before)",
        tuple(compare(b, above("previous", a, 1 - 1e-3, strict=False)) for a, b in itertools.pairwise(ppl)),
    )
    return verdict(
        vs(f"{SWEEP[0]:.0%} sparsity", ppl[1], below("dense", dense, 1 + BAND, strict=False)).wrap(
            f"essential sparsity (last point within {1 + BAND:.2f} x dense {float(dense):.2f}) = {essential:.0%}: "),
        monotone,
        vs(f"{SWEEP[-1]:.0%}", ppl[-1], above("dense", dense, 3, strict=False)),
        vs("last step", last, above("first step", max(first, 0.0), 5, strict=False)),
    )  # fmt: skip


def _figures(r: Results) -> list[Figure]:
    from kb.results import Figure, Series

    pts = _points(r)
    xs = [s for s, _p in pts]
    return [Figure(
        key="sparsity-sweep", title="One-shot global magnitude pruning: perplexity against sparsity",
        x_label="sparsity (fraction of decoder linear weights removed)", y_label="perplexity", y_log=True,
        series=[Series(label="global magnitude", x=xs, y=[p for _s, p in pts]),
                Series(label=f"dense x {1 + BAND:.2f} (the band)", x=[xs[0], xs[-1]],
                       y=[(1 + BAND) * pts[0][1]] * 2)],
    )]  # fmt: skip


PAPER = PaperSpec(
    paper="essential-sparsity",
    method="global-magnitude",
    runs=tuple(Run(sweep_label(s), "global-magnitude", {"sparsity": s}) for s in SWEEP),
    claim="Under one-shot global magnitude pruning, perplexity stays within 1.10x dense up to a knee (the "
    "essential sparsity, at least 10%), then rises sharply: monotone over the 0-90% sweep, at least 3x dense "
    "at 90%, and the last 10% step costs at least 5x the first (paper: 30-50% removable almost for free in "
    "large pre-trained transformers)",
    check=_claim,
    figures=_figures,
    draws=1,  # pre-registered near its bound, but nothing is drawn: no calibration data, no seed
)
