"""Width: methods that shrink matrices by removing heads and channels (LLM-Pruner)."""

from __future__ import annotations

import math

from .specs import MethodSpec, PaperSpec, Results, Run, Verdict, finite

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("llm-pruner", "reference_impls.llm_pruner", "width",
               "remove KV-head groups and MLP channels by Taylor importance, optional LoRA", True,
               paper="llm-pruner"),
    # ---- issue 13 (b): training-heavy width papers --------------------------------------------------
    MethodSpec("sheared-llama", "reference_impls.sheared_llama", "width",
               "learn hard-concrete masks towards a target shape, prune to it, continue training", True,
               paper="sheared-llama"),
    MethodSpec("compresso", "reference_impls.compresso", "width",
               "learn hard-concrete masks with LoRA (frozen base), prune, LoRA fine-tune", True, paper="compresso"),
    MethodSpec("minitron-approach", "reference_impls.minitron_approach", "width",
               "width- or depth-prune to equal size, then distil from the teacher's logits", True,
               paper="minitron-approach"),
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


# ---- issue 13 (b): Sheared LLaMA, Compresso, the Minitron approach ------------------------------------
def _size(r: Results, label: str) -> int:
    return int(r[label].size.params_total)


def _decode(r: Results, label: str) -> float:
    speed = r[label].speed
    return math.nan if speed is None else float(speed.decode_tokens_per_s)


def _sheared_claim(r: Results) -> Verdict:
    learned, masks, init = r.ppl("sheared"), r.ppl("random-masks"), r.ppl("random-init")
    same = len({_size(r, x) for x in ("sheared", "random-masks", "random-init")}) == 1
    ok = finite(learned, masks, init) and learned < 0.2 * init and learned < masks
    reason = (
        f"ppl with learned masks {learned:.2f} vs random masks {masks:.2f} and random init {init:.2f} "
        f"(ratio to random init {learned / init:.3f}, needs < 0.2); probe acc_norm {r.acc('sheared'):.3f} / "
        f"{r.acc('random-masks'):.3f} / {r.acc('random-init'):.3f}; "
        + ("same parameter count in every arm" if same else "parameter counts differ")
    )
    return same and ok, reason


def _compresso_claim(r: Results) -> Verdict:
    learned, mag = r.ppl("l0-lora"), r.ppl("magnitude-lora")
    same = _size(r, "l0-lora") == _size(r, "magnitude-lora")
    ok = finite(learned, mag) and learned < mag
    reason = (
        f"ppl L0 masks + LoRA {learned:.2f} vs one-shot magnitude + the same LoRA steps {mag:.2f}; probe acc_norm "
        f"{r.acc('l0-lora'):.3f} vs {r.acc('magnitude-lora'):.3f}; "
        + ("same parameter count" if same else "parameter counts differ")
        + "; the collaborative prompt is not measured (not measurable at this scale)"
    )
    return same and ok, reason


def _minitron_approach_claim(r: Results) -> Verdict:
    width, depth = r.ppl("width"), r.ppl("depth")
    pw, pd = _size(r, "width"), _size(r, "depth")
    close = abs(pw - pd) <= 0.02 * pd
    dw, dd = _decode(r, "width"), _decode(r, "depth")
    ok = finite(width, depth, dw, dd) and width < depth and dd > dw
    reason = (
        f"after the same distillation steps ppl width {width:.2f} vs depth {depth:.2f} at {pw / 1e6:.2f}M vs "
        f"{pd / 1e6:.2f}M parameters; decode {dw:.1f} vs {dd:.1f} tokens/s (depth faster: {dd > dw}); probe "
        f"acc_norm {r.acc('width'):.3f} vs {r.acc('depth'):.3f}"
    )
    return close and ok, reason


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
    # ---- issue 13 (b) ------------------------------------------------------------------------------------
    PaperSpec(
        paper="sheared-llama",
        method="sheared-llama",
        runs=(
            Run("sheared", "sheared-llama", {"init": "learned"}, speed=True),
            Run("random-masks", "sheared-llama", {"init": "random-masks"}, speed=True),
            Run("random-init", "sheared-llama", {"init": "random-init"}, speed=True),
        ),
        claim="Pruned to a smaller existing shape (llama2.c stories42M's: 8 layers, hidden 512, MLP 1376, with 6 "
        "query heads in 2 KV groups as SmolLM2's GQA allows) by 20 steps of hard-concrete mask learning under "
        "Lagrangian shape constraints and then trained 10 steps (4 x 128 tokens per step), the model has under a "
        "fifth of the perplexity of the same shape randomly initialised and lower perplexity than the same shape "
        "with random masks, both trained 30 steps on the same tokens (a short N-step version of Sheared LLaMA's "
        "0.4B + 50B tokens; dynamic batch loading needs several domains and is not reproduced with one corpus)",
        check=_sheared_claim,
        defaults={"nsamples": 80, "seqlen": 128, "eval_tokens": 4096},
        metrics=("ppl", "probe"),
    ),
    PaperSpec(
        paper="compresso",
        method="compresso",
        runs=(
            Run("l0-lora", "compresso", {"criterion": "l0", "target_sparsity": 0.2}, speed=True),
            Run(
                "magnitude-lora", "compresso", {"criterion": "magnitude", "target_sparsity": 0.2}, speed=True
            ),
            Run("random-lora", "compresso", {"criterion": "random", "target_sparsity": 0.2}, extra=True),
        ),
        claim="Removing 20% of the KV groups and of the MLP channels (the same count in both arms), units chosen "
        "by hard-concrete masks learned in 20 LoRA steps with the base weights frozen give lower perplexity, after "
        "10 more LoRA steps, than units chosen in one shot by weight magnitude followed by the same 30 LoRA steps "
        "(4 x 128 tokens per step; Compresso trains for 8 epochs of instructions); the collaborative prompt is "
        "not measurable at this scale and not run",
        check=_compresso_claim,
        defaults={"nsamples": 80, "seqlen": 128, "eval_tokens": 4096},
        metrics=("ppl", "probe"),
    ),
    PaperSpec(
        paper="minitron-approach",
        method="minitron-approach",
        runs=(
            Run("width", "minitron-approach", {"axis": "width"}, speed=True),
            Run("depth", "minitron-approach", {"axis": "depth"}, speed=True),
        ),
        claim="At equal parameter counts (a quarter of the layers removed, or hidden channels 576 -> 512 plus the "
        "MLP channels that match that size), after the same 20 logit-distillation steps from the dense teacher "
        "(4 x 128 tokens per step), the width-pruned student has lower perplexity than the depth-pruned one and "
        "the depth-pruned one decodes faster (the Minitron approach on Llama-3.1-8B: width more accurate, depth "
        "faster); teacher correction is off",
        check=_minitron_approach_claim,
        defaults={"nsamples": 80, "seqlen": 128, "eval_tokens": 4096},
        metrics=("ppl", "probe"),
    ),
)
