"""Sheared LLaMA: learned hard-concrete masks prune to an existing smaller shape, then training continues."""

from __future__ import annotations

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict
from ._kit import below, details, note, same_size, verdict, vs

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("sheared-llama", "reference_impls.sheared_llama", "width",
               "learn hard-concrete masks towards a target shape, prune to it, continue training", True,
               ("params",), paper="sheared-llama"),
)  # fmt: skip


def _claim(r: Results) -> Verdict:
    learned = r.ppl("sheared")
    learned_shape = details(r, "sheared")
    return verdict(
        vs("with learned masks", learned, below("random masks", r.ppl("random-masks")),
           below("random init", r.ppl("random-init"), 0.2)).wrap("ppl "),
        note(f"probe acc_norm {r.acc('sheared'):.3f} / {r.acc('random-masks'):.3f} / {r.acc('random-init'):.3f}; "
             f"shape reached by the masks {learned_shape.get('reached_shape')} (target reached: "
             f"{learned_shape.get('reached_target')})" + ("; " + str(learned_shape["fold_warning"])
                                                          if learned_shape.get("fold_warning") else "")),
        same_size(r, ("sheared", "random-masks", "random-init")),
    )  # fmt: skip


PAPER = PaperSpec(
    paper="sheared-llama",
    method="sheared-llama",
    runs=(
        Run("sheared", "sheared-llama", {"init": "learned"}, speed=True),
        Run("random-masks", "sheared-llama", {"init": "random-masks"}),  # same shape: speed measured once
        Run("random-init", "sheared-llama", {"init": "random-init"}),
    ),
    claim="Pruned to a smaller shape (24 of 30 layers, hidden 448, MLP 1024, 6 query heads in 2 KV groups) by 200 "
    "steps of hard-concrete mask learning (one 128-token window per step) under Lagrangian shape constraints "
    "with Sheared LLaMA's optimiser and schedule (AdamW betas (0.9, 0.95), cosine after warm-up down to 0.1x, "
    "gradient clipping 1.0), then trained 20 steps (4 x 128 tokens per step), the model has under a fifth of "
    "the perplexity of the same shape randomly initialised and lower perplexity than the same shape with random "
    "masks, both trained the same 20 steps after pruning (a short N-step version of Sheared LLaMA's 0.4B + 50B "
    "tokens; dynamic batch loading needs several domains and is not reproduced with one corpus)",
    check=_claim,
    defaults={"nsamples": 80, "seqlen": 128, "eval_tokens": 2048, "probe_items": 100},
    metrics=("ppl", "probe"),
)
