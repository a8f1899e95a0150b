"""Width: methods that shrink matrices by removing heads and channels (LLM-Pruner)."""

from __future__ import annotations

from .specs import MethodSpec, PaperSpec, Results, Run, Verdict, finite

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("llm-pruner", "reference_impls.llm_pruner", "width",
               "remove KV-head groups and MLP channels by Taylor importance, optional LoRA", True,
               paper="llm-pruner"),
)  # fmt: skip


def _llm_pruner_claim(r: Results) -> Verdict:
    t, l2, rnd, lora = r.ppl("taylor"), r.ppl("l2"), r.ppl("random"), r.ppl("taylor-lora")
    acc_t, acc_l2, acc_rnd = r.acc("taylor"), r.acc("l2"), r.acc("random")
    sizes = {r[label].size.params_total for label in ("taylor", "l2", "random", "taylor-lora")}
    same = len(sizes) == 1
    ppl_ok = finite(t, l2, rnd) and t < l2 and t < rnd
    acc_ok = finite(acc_t, acc_l2, acc_rnd) and acc_t > acc_l2 and acc_t > acc_rnd
    lora_ok = finite(lora, t) and lora < t
    reason = (
        f"ppl taylor {t:.2f} vs l2 {l2:.2f} and random {rnd:.2f}; probe acc_norm taylor {acc_t:.3f} vs l2 "
        f"{acc_l2:.3f} and random {acc_rnd:.3f}; after LoRA {lora:.2f} vs {t:.2f}; "
        + ("same parameter count in every arm" if same else f"parameter counts differ: {sorted(sizes)}")
    )
    return same and ppl_ok and acc_ok and lora_ok, reason


PAPERS: tuple[PaperSpec, ...] = (
    PaperSpec(
        paper="llm-pruner",
        method="llm-pruner",
        runs=(
            Run("taylor", "llm-pruner", {"importance": "taylor"}, speed=True),
            Run("l2", "llm-pruner", {"importance": "l2"}),
            Run("random", "llm-pruner", {"importance": "random"}),
            Run("taylor-lora", "llm-pruner", {"importance": "taylor", "recovery_steps": 20}),
        ),
        claim="Removing a quarter of the KV-head groups and MLP channels of the middle layers (the same parameter "
        "count in every arm), groups chosen by first-order Taylor importance give lower perplexity and higher "
        "multiple-choice probe accuracy than groups chosen by L2 magnitude or at random, and 20 LoRA steps lower "
        "the perplexity further (LLM-Pruner on LLaMA-7B at 20% fewer parameters, before tuning: WikiText-2 perplexity "
        "19.1 with Taylor groups against 27.5 random and 582 L2, as quoted in the record)",
        check=_llm_pruner_claim,
        defaults={"nsamples": 80, "seqlen": 128, "eval_tokens": 4096},
        metrics=("ppl", "probe"),
    ),
)
