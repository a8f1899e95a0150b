"""Shortened LLaMA: remove whole blocks chosen by the perplexity criterion; quality against Taylor+ and random
blocks, decode speed against a width-pruned model of the same size."""

from __future__ import annotations

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict
from ._kit import above, below, check, decoder_params, note, speed_text, verdict, vs

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("shortened-llama", "reference_impls.shortened_llama", "depth",
               "remove the blocks whose single removal raises calibration perplexity least (or Taylor+)", True,
               ("layers",), paper="shortened-llama"),
)  # fmt: skip


def _claim(r: Results) -> Verdict:
    randoms = r.labels("random-")
    p_depth, p_width = decoder_params(r, "ppl"), decoder_params(r, "width")
    same = abs(p_depth - p_width) <= 0.01 * p_depth
    return verdict(
        vs("criterion", r.ppl("ppl"), below("Taylor+", r.ppl("taylor+")),
           below(f"random mean of {len(randoms)}", r.mean(randoms, r.ppl))).wrap("ppl "),
        note(f"probe acc_norm {r.acc('ppl'):.3f} vs {r.acc('taylor+'):.3f} and {r.mean(randoms, r.acc):.3f}"),
        vs("depth", r.decode_ratio("ppl"), above("width", r.decode_ratio("width"), 1.10)).wrap(
            "decode speed vs dense, timed alternately with it: "),
        check(same, f"{p_depth / 1e6:.2f}M vs {p_width / 1e6:.2f}M decoder params"
              + ("" if same else " (parameter counts differ by more than 1%)")),
        note(speed_text(r, "ppl").removeprefix("; ")),
    )  # fmt: skip


PAPER = PaperSpec(
    paper="shortened-llama",
    method="shortened-llama",
    runs=(
        Run("ppl", "shortened-llama", {"criterion": "ppl"}, speed=True),
        Run("taylor+", "shortened-llama", {"criterion": "taylor+"}),
        *(Run(f"random-{i}", "shortened-llama", {"criterion": "random", "seed": i}) for i in range(3)),
        Run("width", "llm-pruner", {"attention": "none", "mlp": True, "ratio": 1 / 3}, speed=True),
        Run("magnitude", "shortened-llama", {"criterion": "magnitude"}, extra=True),
        Run("ppl-lora", "shortened-llama", {"criterion": "ppl", "recovery_steps": 20}, extra=True),
    ),
    claim="Removing {layers} blocks chosen by the perplexity criterion gives lower perplexity than Taylor+ and "
    "than {layers} random blocks (mean of 3 draws), and the depth-pruned model decodes more than 10% faster "
    "at batch 1 than a width-pruned model of the same parameter count (LLM-Pruner's MLP channels, a third "
    "of them in the middle layers) (Shortened LLaMA: depth pruning matches width pruning and runs faster)",
    check=_claim,
    # the PPL criterion scores each single-block removal on 10 x 128 calibration tokens, as upstream does
    defaults={
        "layers": 6,
        "nsamples": 10,
        "seqlen": 128,
        "eval_tokens": 2048,
        "probe_items": 100,
        "speed_repeats": 10,
    },
    metrics=("ppl", "probe"),
    draws=3,  # pre-registered: the committed margin was within 10% of the bound
)
