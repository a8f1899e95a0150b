"""Heterogeneous Sublayers: remove attention and MLP sublayers progressively by loss change per parameter,
against whole blocks at the same parameter count."""

from __future__ import annotations

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict
from ._kit import below, check, decoder_params, detail, note, speed_text, verdict, vs

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("heterogeneous-sublayers", "reference_impls.heterogeneous_sublayers", "depth",
               "remove sublayers progressively by loss impact per parameter to a parameter budget", True,
               paper="heterogeneous-sublayers"),
)  # fmt: skip


def _claim(r: Results) -> Verdict:
    dense = decoder_params(r, "dense")
    ps, pb = decoder_params(r, "sublayers"), decoder_params(r, "blocks")
    tokens = [detail(r, label, "score_tokens") for label in ("sublayers", "blocks")]
    return verdict(
        vs("progressive sublayer removal", r.ppl("sublayers"), below("whole blocks", r.ppl("blocks"))).wrap("ppl "),
        check(tokens[0] is not None and tokens[0] == tokens[1], f"scoring tokens {tokens[0]} vs {tokens[1]}"),
        check(ps <= pb * 1.01, f"decoder params removed {1 - ps / dense:.1%} vs {1 - pb / dense:.1%}"
              + ("" if ps <= pb * 1.01 else " (the sublayer arm kept more parameters)")),
        note(f"probe acc_norm {r.acc('sublayers'):.3f} vs {r.acc('blocks'):.3f}" + speed_text(r, "sublayers")
             + speed_text(r, "blocks")),
    )  # fmt: skip


PAPER = PaperSpec(
    paper="heterogeneous-sublayers",
    method="heterogeneous-sublayers",
    runs=(
        Run(
            "sublayers",
            "heterogeneous-sublayers",
            {"unit": "sublayer", "per_round": 2},
            speed=True,
        ),
        Run("blocks", "heterogeneous-sublayers", {"unit": "block"}, speed=True),
    ),
    claim="Removing attention and MLP sublayers progressively by normalized relative impact (loss change per "
    "parameter, re-scored every 2 removals; both arms score on the same 512-token calibration window) until "
    "20% of the decoder parameters are gone gives lower "
    "perplexity than removing whole blocks (lowest Block Influence) to the same parameter count "
    "(Heterogeneous Sublayers, reconstructed from the abstract)",
    check=_claim,
    defaults={"nsamples": 16, "seqlen": 512, "eval_tokens": 2048, "probe_items": 200},
    metrics=("ppl", "probe"),
)
