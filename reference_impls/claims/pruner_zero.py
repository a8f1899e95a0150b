"""Pruner-Zero: the searched metric |W * W| x minmax(gradient), against Wanda and magnitude at 50%."""

from __future__ import annotations

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict
from ._kit import below, verdict, vs

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("pruner-zero", "reference_impls.pruner_zero", "weight-sparsity",
               "searched metric |W*W| x min-max scaled gradient norm, per output row (search not included)", True,
               ("sparsity", "pattern"), paper="pruner-zero"),
)  # fmt: skip


def _claim(r: Results) -> Verdict:
    return verdict(
        vs(
            "pruner-zero",
            r.ppl("pruner-zero"),
            below("wanda", r.ppl("wanda"), 1.02, strict=False),
            below("magnitude", r.ppl("magnitude"), 0.7),
        )
    )


PAPER = PaperSpec(
    paper="pruner-zero",
    method="pruner-zero",
    runs=(Run("magnitude", "magnitude"), Run("wanda", "wanda"), Run("pruner-zero", "pruner-zero")),
    claim="At {sparsity:.0%} unstructured sparsity the searched Pruner-Zero metric (squared weight times the "
    "min-max scaled gradient norm, no activations, no weight update) gives a perplexity at most 1.02x Wanda's "
    "and below 0.7x magnitude pruning's (Pruner-Zero paper, LLaMA and LLaMA-2 at 50%: at or slightly below "
    "Wanda, by a few percent at most, and far below magnitude). Only the published metric is reproduced, not "
    "the genetic-programming search; its gradients come from the run's 16 x 512 calibration tokens, not the "
    "paper's 128 x 2048",
    check=_claim,
    defaults={"sparsity": 0.5},
)
