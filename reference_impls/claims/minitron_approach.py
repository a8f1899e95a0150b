"""The Minitron approach: width against depth pruning at equal size, both distilled from the dense teacher."""

from __future__ import annotations

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict, finite
from ._kit import decode_rate, total_params

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("minitron-approach", "reference_impls.minitron_approach", "width",
               "width- or depth-prune to equal size, then distil from the teacher's logits", True, ("params",),
               paper="minitron-approach"),
)  # fmt: skip


def _claim(r: Results) -> Verdict:
    width, depth = r.ppl("width"), r.ppl("depth")
    pw, pd = total_params(r, "width"), total_params(r, "depth")
    close = abs(pw - pd) <= 0.02 * pd
    dw, dd = decode_rate(r, "width"), decode_rate(r, "depth")
    ok = finite(width, depth, dw, dd) and width < depth and dd > dw
    reason = (
        f"after the same distillation steps ppl width {width:.2f} vs depth {depth:.2f} at {pw / 1e6:.2f}M vs "
        f"{pd / 1e6:.2f}M parameters; decode {dw:.1f} vs {dd:.1f} tokens/s (depth faster: {dd > dw}); probe "
        f"acc_norm {r.acc('width'):.3f} vs {r.acc('depth'):.3f}"
    )
    return close and ok, reason


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
    defaults={"nsamples": 80, "seqlen": 128, "eval_tokens": 2048, "probe_items": 100},
    metrics=("ppl", "probe"),
)
