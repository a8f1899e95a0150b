"""Reassessing Layer Pruning: remove the last layers and fine-tune the last three, the final norm and the head,
against LoRA and against Block Influence order."""

from __future__ import annotations

import math

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict
from ._kit import below, fail, note, speed_text, verdict, vs

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("reassessing-layer-pruning", "reference_impls.reassessing_layer_pruning", "depth",
               "remove the last layers, then fine-tune the last three, the final norm and the head", True, ("layers",),
               paper="reassessing-layer-pruning"),
)  # fmt: skip


LRS = (1e-4, 3e-4)


def _best(r: Results, prefix: str) -> tuple[float, str]:
    labels = r.labels(prefix)
    if not labels:
        return math.nan, ""
    return min((r.ppl(label), label) for label in labels)


def _claim(r: Results) -> Verdict:
    partial, pl = _best(r, "reverse-partial-")
    lora, ll = _best(r, "reverse-lora-")
    bi, bl = _best(r, "bi-partial-")
    if not (pl and ll and bl):
        return fail("runs missing")
    lrs = ", ".join(f"{lr:g}" for lr in LRS)
    return verdict(
        vs(f"partial-layer fine-tuning ({pl})", partial, below(f"LoRA ({ll})", lora, strict=False)).wrap(
            f"last layers removed, best of lr {lrs}: ppl "),
        vs("reverse order", partial, below(f"Block Influence ({bl})", bi, 1.05, strict=False)).wrap(
            "after partial-layer fine-tuning: "),
        note(f"probe acc_norm {r.acc(pl):.3f} vs LoRA {r.acc(ll):.3f} and BI {r.acc(bl):.3f}"
             + (speed_text(r, "reverse-partial-0.0001") if "reverse-partial-0.0001" in r.labels() else "")),
    )  # fmt: skip


PAPER = PaperSpec(
    paper="reassessing-layer-pruning",
    method="reassessing-layer-pruning",
    runs=(
        *(
            Run(
                f"reverse-partial-{lr:g}",
                "reassessing-layer-pruning",
                {"metric": "reverse", "recovery": "partial", "lr": lr},
                speed=lr == LRS[0],
            )
            for lr in LRS
        ),
        *(
            Run(
                f"reverse-lora-{lr:g}",
                "reassessing-layer-pruning",
                {"metric": "reverse", "recovery": "lora", "lr": lr},
            )
            for lr in LRS
        ),
        *(
            Run(
                f"bi-partial-{lr:g}",
                "reassessing-layer-pruning",
                {"metric": "bi", "recovery": "partial", "lr": lr},
            )
            for lr in LRS
        ),
        Run(
            "reverse-none",
            "reassessing-layer-pruning",
            {"metric": "reverse", "recovery": "none"},
            extra=True,
        ),
        Run(
            "magnitude-l1-partial",
            "reassessing-layer-pruning",
            {"metric": "magnitude-l1", "recovery": "partial"},
            extra=True,
        ),
        Run(
            "taylor-partial",
            "reassessing-layer-pruning",
            {"metric": "taylor", "recovery": "partial"},
            extra=True,
        ),
    ),
    claim="After removing the last {layers} layers, fine-tuning only the last three remaining layers, the final "
    "norm and the LM head (as the official partial_fine-tuning.py does) gives a perplexity no higher than LoRA "
    "with the same steps and tokens (best of two learning rates each), and after that fine-tuning reverse-order "
    "removal is within 5% of removing the {layers} lowest Block Influence layers (Reassessing Layer Pruning: "
    "reverse order plus partial-layer fine-tuning)",
    check=_claim,
    defaults={"layers": 8, "nsamples": 32, "seqlen": 128, "eval_tokens": 2048, "probe_items": 100},
    metrics=("ppl", "probe"),
)
