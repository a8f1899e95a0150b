"""The Minitron approach: width against depth pruning at equal size, both distilled from the dense teacher."""

from __future__ import annotations

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict
from ._kit import above, below, check, note, total_params, verdict, vs

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("minitron-approach", "reference_impls.minitron_approach", "width",
               "width- or depth-prune to equal size, then distil from the teacher's logits", True, ("params",),
               paper="minitron-approach"),
)  # fmt: skip


def _claim(r: Results) -> Verdict:
    pw, pd = total_params(r, "width"), total_params(r, "depth")
    return verdict(
        vs("width", r.ppl("width"), below("depth", r.ppl("depth"))).wrap("after the same distillation steps ppl "),
        check(abs(pw - pd) <= 0.02 * pd, f"{pw / 1e6:.2f}M vs {pd / 1e6:.2f}M parameters (within 2%)"),
        vs("depth", r.decode_ratio("depth"), above("width", r.decode_ratio("width"))).wrap(
            "decode speed vs dense (timed alternately with it): "),
        note(f"probe acc_norm {r.acc('width'):.3f} vs {r.acc('depth'):.3f}"),
    )  # fmt: skip


PAPER = PaperSpec(
    paper="minitron-approach",
    method="minitron-approach",
    runs=(
        Run("width", "minitron-approach", {"axis": "width"}, speed=True),
        Run("depth", "minitron-approach", {"axis": "depth"}, speed=True),
    ),
    claim="At equal parameter counts (a quarter of the layers removed, or hidden channels 576 -> 512 plus the "
    "MLP channels that match that size), after the same 20 logit-distillation steps from the dense teacher "
    "(4 x 128 tokens per step), the width-pruned student has lower perplexity than the depth-pruned one and "
    "the depth-pruned one decodes faster (the Minitron approach on Llama-3.1-8B: width more accurate, depth "
    "faster); teacher correction is off",
    check=_claim,
    defaults={"nsamples": 80, "seqlen": 128, "eval_tokens": 2048, "probe_items": 100, "speed_repeats": 10},
    metrics=("ppl", "probe"),
    draws=3,  # pre-registered: the committed margin was within 10% of the bound
)
