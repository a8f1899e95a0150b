"""A Deeper Look at depth pruning: attention sublayers against MLP sublayers by cosine similarity, and the
mean update in place of a dropped MLP."""

from __future__ import annotations

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict
from ._kit import below, note, speed_text, verdict, vs

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("deeper-look-depth", "reference_impls.deeper_look_depth", "depth",
               "drop sublayers by cosine or Shapley importance, optionally adding their mean update", True,
               ("layers",), paper="deeper-look-depth"),
)  # fmt: skip


def _claim(r: Results) -> Verdict:
    a, m, mm = r.ppl("attention"), r.ppl("mlp"), r.ppl("mlp-mean")
    return verdict(
        vs("dropping the attention sublayers", a, below("the MLP sublayers", m)).wrap("ppl "),
        vs("MLP drop with the mean update", mm, below("plain", m)),
        note(f"probe acc_norm {r.acc('attention'):.3f} / {r.acc('mlp'):.3f} / {r.acc('mlp-mean'):.3f}"
             + speed_text(r, "attention")),
    )  # fmt: skip


PAPER = PaperSpec(
    paper="deeper-look-depth",
    method="deeper-look-depth",
    runs=(
        Run("attention", "deeper-look-depth", {"target": "attention"}, speed=True),
        Run("mlp", "deeper-look-depth", {"target": "mlp"}),
        Run("mlp-mean", "deeper-look-depth", {"target": "mlp", "emulate": "mean"}),
        Run("attention-mean", "deeper-look-depth", {"target": "attention", "emulate": "mean"}, extra=True),
        Run(
            "attention-shapley",
            "deeper-look-depth",
            {"target": "attention", "metric": "shapley"},
            extra=True,
        ),
    ),
    claim="Dropping the {layers} attention sublayers with the highest input/output cosine similarity gives lower "
    "perplexity than dropping {layers} MLP sublayers chosen the same way, and replacing each dropped MLP by "
    "its mean calibration update lowers the perplexity of the MLP drop (A Deeper Look: attention is more "
    "prunable; emulated updates help)",
    check=_claim,
    defaults={"layers": 6, "nsamples": 16, "seqlen": 512, "eval_tokens": 2048, "probe_items": 200},
    metrics=("ppl", "probe"),
    draws=3,  # pre-registered: the committed margin was within 10% of the bound
)
