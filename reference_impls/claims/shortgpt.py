"""ShortGPT: remove the layers with the lowest Block Influence, against random and highest-BI layers."""

from __future__ import annotations

import math

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict, finite

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("shortgpt", "reference_impls.shortgpt", "depth",
               "remove the layers with the lowest Block Influence", True, ("layers",), paper="shortgpt"),
)  # fmt: skip


def _claim(r: Results) -> Verdict:
    randoms = r.labels("random-")
    low, high = r.ppl("lowest-bi"), r.ppl("highest-bi")
    rand = r.mean(randoms, r.ppl)
    acc_low, acc_high, acc_rand = r.acc("lowest-bi"), r.acc("highest-bi"), r.mean(randoms, r.acc)
    ppl_ok = finite(low, rand, high) and low < rand and low < high
    acc_ok = finite(acc_low, acc_rand, acc_high) and acc_low > acc_rand and acc_low > acc_high
    best = min((r.ppl(label) for label in randoms), default=math.nan)
    reason = (
        f"ppl lowest-BI {low:.2f} vs random mean {rand:.2f} (best draw {best:.2f}) and highest-BI {high:.2f}; "
        f"probe acc_norm lowest-BI {acc_low:.3f} vs random mean {acc_rand:.3f} and highest-BI {acc_high:.3f}"
    )
    return ppl_ok and acc_ok, reason


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
    defaults={"layers": 6, "nsamples": 8, "eval_tokens": 2048, "probe_items": 200},
    metrics=("ppl", "probe"),
)
