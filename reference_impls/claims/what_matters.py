"""What Matters: drop the most redundant attention sublayers, against MLP sublayers and whole blocks."""

from __future__ import annotations

import math

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict
from ._kit import above, check, kv_bytes, note, speed_text, verdict, vs

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("what-matters", "reference_impls.what_matters", "depth",
               "drop the attention sublayers (or MLPs, or blocks) that change the stream least", True, ("layers",),
               paper="what-matters"),
)  # fmt: skip


def _claim(r: Results) -> Verdict:
    outcome = r.outcome("attention")
    k = len(outcome.removed_sublayers) if outcome is not None else 0
    layers = r["dense"].size.layers
    ratio = kv_bytes(r, "attention") / kv_bytes(r, "dense")
    expected = 1 - k / layers
    return verdict(
        vs(f"dropping {k} attention sublayers", r.acc("attention"), above(f"{k} MLP sublayers", r.acc("mlp")),
           digits=3).wrap("probe acc_norm "),
        vs(f"{k} MLP sublayers", r.acc("mlp"), above(f"{k} blocks", r.acc("block")), digits=3),
        check(math.isfinite(ratio) and abs(ratio - expected) <= 0.01,
              f"KV cache x{ratio:.4f} of dense (expected {expected:.4f})"),
        note(f"ppl {r.ppl('attention'):.2f} / {r.ppl('mlp'):.2f} / {r.ppl('block'):.2f}" + speed_text(r, "attention")
             + speed_text(r, "block")),
    )  # fmt: skip


PAPER = PaperSpec(
    paper="what-matters",
    method="what-matters",
    runs=(
        Run("attention", "what-matters", {"target": "attention"}, speed=True),
        Run("mlp", "what-matters", {"target": "mlp"}),
        Run("block", "what-matters", {"target": "block"}, speed=True),
        Run("joint", "what-matters", {"target": "joint"}, extra=True),
        Run(
            "attention-iterative",
            "what-matters",
            {"target": "attention", "mode": "iterative"},
            extra=True,
        ),
    ),
    claim="Dropping the {layers} most redundant attention sublayers (by input/output similarity) keeps a higher "
    "multiple-choice probe accuracy than dropping {layers} MLP sublayers, which keeps more than dropping "
    "{layers} blocks, and the KV cache shrinks by the share of layers whose attention is gone (What Matters: "
    "not all attention is needed)",
    check=_claim,
    defaults={"layers": 6, "nsamples": 16, "seqlen": 512, "eval_tokens": 2048, "probe_items": 500},
    metrics=("ppl", "probe"),
    draws=3,  # pre-registered: the committed margin was within 10% of the bound
)
