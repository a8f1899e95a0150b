"""Compresso: hard-concrete masks learned with LoRA on a frozen base, against one-shot magnitude with LoRA."""

from __future__ import annotations

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict
from ._kit import below, details, note, same_size, verdict, vs

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("compresso", "reference_impls.compresso", "width",
               "learn hard-concrete masks with LoRA (frozen base), prune, LoRA fine-tune", True, ("params",),
               paper="compresso"),
)  # fmt: skip


def _claim(r: Results) -> Verdict:
    learned = details(r, "l0-lora")
    return verdict(
        vs("L0 masks + LoRA", r.ppl("l0-lora"), below("one-shot magnitude + the same LoRA steps",
                                                      r.ppl("magnitude-lora"))).wrap("ppl "),
        note(f"probe acc_norm {r.acc('l0-lora'):.3f} vs {r.acc('magnitude-lora'):.3f}"),
        same_size(r, ("l0-lora", "magnitude-lora")),
        note(f"mask learning reached expected sparsity {learned.get('expected_sparsity_end')} (gap "
             f"{learned.get('sparsity_gap')} to the target, within 0.005: {learned.get('sparsity_reached')}); "
             f"{learned.get('tie_broken_removals')} removals decided by the seeded tie-break"),
        note("the collaborative prompt is not measured (not measurable at this scale)"),
    )  # fmt: skip


PAPER = PaperSpec(
    paper="compresso",
    method="compresso",
    runs=(
        Run("l0-lora", "compresso", {"criterion": "l0", "target_sparsity": 0.2}, speed=True),
        Run("magnitude-lora", "compresso", {"criterion": "magnitude", "target_sparsity": 0.2}, speed=True),
        Run("random-lora", "compresso", {"criterion": "random", "target_sparsity": 0.2}, extra=True),
    ),
    claim="Removing 20% of the KV groups and of the MLP channels (the same count in both arms), units chosen "
    "by hard-concrete masks learned with LoRA on a frozen base (40 to 140 steps, until the expected sparsity is "
    "within 0.005 of the target, as the official trainer requires before it saves) give lower perplexity, after "
    "LoRA fine-tuning to 160 LoRA steps in all, than units chosen in one shot by weight magnitude followed by "
    "the same 160 LoRA steps (4 x 128 tokens per step; Compresso trains for 8 epochs of instructions); the "
    "collaborative prompt is not measurable at this scale and not run",
    check=_claim,
    defaults={"nsamples": 80, "seqlen": 128, "eval_tokens": 2048, "probe_items": 100},
    metrics=("ppl", "probe"),
)
