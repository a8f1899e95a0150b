"""ShortGPT: remove the layers with the lowest Block Influence, against random and highest-BI layers."""

from __future__ import annotations

import math

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict
from ._kit import above, below, note, verdict, vs

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("shortgpt", "reference_impls.shortgpt", "depth",
               "remove the layers with the lowest Block Influence", True, ("layers",), paper="shortgpt"),
)  # fmt: skip


def _claim(r: Results) -> Verdict:
    randoms = r.labels("random-")
    best = min((r.ppl(label) for label in randoms), default=math.nan)
    return verdict(
        vs("lowest-BI", r.ppl("lowest-bi"), below(f"random mean of {len(randoms)}", r.mean(randoms, r.ppl)),
           below("highest-BI", r.ppl("highest-bi"))).wrap("ppl "),
        vs("lowest-BI", r.acc("lowest-bi"), above("random mean", r.mean(randoms, r.acc)),
           above("highest-BI", r.acc("highest-bi")), digits=3).wrap("probe acc_norm "),
        note(f"best random draw ppl {best:.2f}"),
    )  # fmt: skip


PAPER = PaperSpec(
    paper="shortgpt",
    method="shortgpt",
    runs=(
        Run("lowest-bi", "shortgpt", {"selection": "lowest"}, speed=True),
        *(Run(f"random-{i}", "shortgpt", {"selection": "random", "seed": i}) for i in range(3)),
        Run("highest-bi", "shortgpt", {"selection": "highest"}),
    ),
    claim="Removing the {layers} layers with the lowest Block Influence gives lower perplexity and higher "
    "multiple-choice probe accuracy than removing {layers} random layers (mean of 3 draws) or the "
    "{layers} highest-BI layers (ShortGPT: low-BI layers are redundant)",
    check=_claim,
    # Block Influence from 8 x 512 calibration tokens; 2048 evaluation tokens and 200 probe items keep the
    # eight arms within the reproduction budget
    defaults={"layers": 6, "nsamples": 8, "eval_tokens": 2048, "probe_items": 500},
    metrics=("ppl", "probe"),
)
