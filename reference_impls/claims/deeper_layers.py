"""Deeper Layers (Gromov et al.): remove the window of layers with the smallest angular distance, then heal
with LoRA; judged against every other contiguous window."""

from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict
from ._kit import below, check, detail, fail, note, speed_text, verdict, vs

if TYPE_CHECKING:
    from kb.results import Figure

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("deeper-layers", "reference_impls.deeper_layers", "depth",
               "remove the window of layers with the smallest angular distance, then heal with LoRA", True,
               ("layers",), paper="deeper-layers"),
)  # fmt: skip


WINDOWS = 25  # window runs: starts 0..24 cover every 6-window of a 30-layer model (larger starts are clamped)


def _claim(r: Results) -> Verdict:
    by_start: dict[int, float] = {}
    for label in r.labels("window-"):
        start = detail(r, label, "start")
        if isinstance(start, int):
            by_start.setdefault(start, r.ppl(label))
    start = detail(r, "angular", "start")
    layers = r["dense"].size.layers
    if not by_start or not isinstance(start, int):
        return fail("no window runs or no angular window")
    angular = r.ppl("angular")
    median = statistics.median(by_start.values())  # the middle window(s) by point estimate
    deep = 2 * start >= layers
    return verdict(
        check(deep, f"angular window starts at layer {start} of {layers} ({'second' if deep else 'first'} half)"),
        vs("ppl angular", angular, below(f"median over {len(by_start)} contiguous windows", median, strict=False),
           below("the window at the start", by_start.get(0, math.nan))),
        vs("after healing", r.ppl("angular-healed"), below("before", angular)),
        note(f"probe acc_norm angular {r.acc('angular'):.3f}, healed {r.acc('angular-healed'):.3f}"
             + speed_text(r, "angular")),
    )  # fmt: skip


def _figures(r: Results) -> list[Figure]:
    """Perplexity of every contiguous window (by start layer) and the angular distances that chose one."""
    from kb.results import Figure, Series

    by_start: dict[int, float] = {}
    for label in r.labels("window-"):
        start = detail(r, label, "start")
        if isinstance(start, int):
            by_start.setdefault(start, r.ppl(label))
    figures = []
    if by_start:
        xs = sorted(by_start)
        figures.append(Figure(key="window-perplexity", title="Perplexity after removing each contiguous window",
                              x_label="first removed layer", y_label="perplexity", y_log=True,
                              series=[Series(label="window removed", x=[float(s) for s in xs],
                                             y=[by_start[s] for s in xs])]))  # fmt: skip
    distances = detail(r, "angular", "angular_distance")
    if isinstance(distances, list) and distances:
        figures.append(Figure(key="angular-distance", title="Angular distance between a window's input and output",
                              x_label="first removed layer", y_label="angular distance (last token)",
                              series=[Series(label="angular distance", x=[float(i) for i in range(len(distances))],
                                             y=distances)]))  # fmt: skip
    return figures


PAPER = PaperSpec(
    paper="deeper-layers",
    method="deeper-layers",
    runs=(
        Run("angular", "deeper-layers", {"selection": "angular", "heal_steps": 0}, speed=True),
        Run("angular-healed", "deeper-layers", {"selection": "angular", "heal_steps": 20}),
        *(
            Run(
                f"window-{s:02d}",
                "deeper-layers",
                {"selection": "window", "start": s, "heal_steps": 0},
                probe=False,
            )  # the window sweep is judged by perplexity
            for s in range(WINDOWS)
        ),
        Run("deepest", "deeper-layers", {"selection": "deepest", "heal_steps": 0}, extra=True),
    ),
    claim="Removing the window of {layers} consecutive layers with the smallest angular distance (last token) "
    "gives a perplexity no higher than the median over every contiguous {layers}-layer window and lower than "
    "the window at the start, the window lies in the second half of the network, and 20 LoRA healing steps "
    "lower the perplexity further (Gromov et al.: deep layers are the most removable; healing repairs the loss)",
    check=_claim,
    figures=_figures,
    defaults={"layers": 6, "nsamples": 32, "seqlen": 128, "eval_tokens": 1536, "probe_items": 60},
    metrics=("ppl", "probe"),
)
