"""What Matters: drop the most redundant attention sublayers, against MLP sublayers and whole blocks."""

from __future__ import annotations

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict, finite
from ._kit import kv_bytes, speed_text

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("what-matters", "reference_impls.what_matters", "depth",
               "drop the attention sublayers (or MLPs, or blocks) that change the stream least", True, ("layers",),
               paper="what-matters"),
)  # fmt: skip


def _claim(r: Results) -> Verdict:
    a, m, b = r.acc("attention"), r.acc("mlp"), r.acc("block")
    pa, pm, pb = r.ppl("attention"), r.ppl("mlp"), r.ppl("block")
    outcome = r.outcome("attention")
    k = len(outcome.removed_sublayers) if outcome is not None else 0
    layers = r["dense"].size.layers
    ratio = kv_bytes(r, "attention") / kv_bytes(r, "dense")
    expected = 1 - k / layers
    kv_ok = finite(ratio) and abs(ratio - expected) <= 0.01
    ok = finite(a, m, b) and a > m > b and kv_ok
    reason = (f"probe acc_norm dropping {k} attention sublayers {a:.3f} > {k} MLP sublayers {m:.3f} > {k} blocks "
              f"{b:.3f}; ppl {pa:.2f} / {pm:.2f} / {pb:.2f}; KV cache x{ratio:.4f} of dense (expected "
              f"{expected:.4f})" + speed_text(r, "attention") + speed_text(r, "block"))  # fmt: skip
    return ok, reason


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
    defaults={"layers": 6, "nsamples": 16, "seqlen": 512, "eval_tokens": 2048, "probe_items": 200},
    metrics=("ppl", "probe"),
)
