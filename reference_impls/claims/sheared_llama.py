"""Sheared LLaMA: learned hard-concrete masks prune to an existing smaller shape, then training continues."""

from __future__ import annotations

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict, finite
from ._kit import total_params

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("sheared-llama", "reference_impls.sheared_llama", "width",
               "learn hard-concrete masks towards a target shape, prune to it, continue training", True,
               ("params",), paper="sheared-llama"),
)  # fmt: skip


def _claim(r: Results) -> Verdict:
    learned, masks, init = r.ppl("sheared"), r.ppl("random-masks"), r.ppl("random-init")
    same = len({total_params(r, x) for x in ("sheared", "random-masks", "random-init")}) == 1
    ok = finite(learned, masks, init) and learned < 0.2 * init and learned < masks
    reason = (
        f"ppl with learned masks {learned:.2f} vs random masks {masks:.2f} and random init {init:.2f} "
        f"(ratio to random init {learned / init:.3f}, needs < 0.2); probe acc_norm {r.acc('sheared'):.3f} / "
        f"{r.acc('random-masks'):.3f} / {r.acc('random-init'):.3f}; "
        + ("same parameter count in every arm" if same else "parameter counts differ")
    )
    return same and ok, reason


PAPER = PaperSpec(
    paper="sheared-llama",
    method="sheared-llama",
    runs=(
        Run("sheared", "sheared-llama", {"init": "learned"}, speed=True),
        Run("random-masks", "sheared-llama", {"init": "random-masks"}),  # same shape: speed measured once
        Run("random-init", "sheared-llama", {"init": "random-init"}),
    ),
    claim="Pruned to a smaller existing shape (llama2.c stories42M's: 8 layers, hidden 512, MLP 1376, with 6 "
    "query heads in 2 KV groups as SmolLM2's GQA allows) by 20 steps of hard-concrete mask learning under "
    "Lagrangian shape constraints and then trained 10 steps (4 x 128 tokens per step), the model has under a "
    "fifth of the perplexity of the same shape randomly initialised and lower perplexity than the same shape "
    "with random masks, both trained 30 steps on the same tokens (a short N-step version of Sheared LLaMA's "
    "0.4B + 50B tokens; dynamic batch loading needs several domains and is not reproduced with one corpus)",
    check=_claim,
    defaults={"nsamples": 80, "seqlen": 128, "eval_tokens": 2048, "probe_items": 100},
    metrics=("ppl", "probe"),
)
