"""Shortened LLaMA: remove whole blocks chosen by the perplexity criterion; quality against Taylor+ and random
blocks, decode speed against a width-pruned model of the same size."""

from __future__ import annotations

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict, finite
from ._kit import decode_rate, decoder_params, speed_text

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("shortened-llama", "reference_impls.shortened_llama", "depth",
               "remove the blocks whose single removal raises calibration perplexity least (or Taylor+)", True,
               ("layers",), paper="shortened-llama"),
)  # fmt: skip


def _claim(r: Results) -> Verdict:
    ppl, taylor = r.ppl("ppl"), r.ppl("taylor+")
    randoms = r.labels("random-")
    rand = r.mean(randoms, r.ppl)
    depth_rate, width_rate = decode_rate(r, "ppl"), decode_rate(r, "width")
    p_depth, p_width = decoder_params(r, "ppl"), decoder_params(r, "width")
    same = abs(p_depth - p_width) <= 0.01 * p_depth
    quality = finite(ppl, taylor, rand) and ppl < taylor and ppl < rand
    faster = finite(depth_rate, width_rate) and depth_rate > 1.10 * width_rate
    reason = (f"ppl criterion {ppl:.2f} vs Taylor+ {taylor:.2f} and random mean {rand:.2f}; probe acc_norm "
              f"{r.acc('ppl'):.3f} vs {r.acc('taylor+'):.3f} and {r.mean(randoms, r.acc):.3f}; decode "
              f"{depth_rate:.1f} tok/s depth vs {width_rate:.1f} width (x{depth_rate / width_rate:.2f}, needs > x1.10) "
              f"at {p_depth / 1e6:.2f}M vs {p_width / 1e6:.2f}M decoder params"
              + ("" if same else " (parameter counts differ by more than 1%)") + speed_text(r, "ppl"))  # fmt: skip
    return quality and faster and same, reason


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
    defaults={"layers": 6, "nsamples": 10, "seqlen": 128, "eval_tokens": 2048, "probe_items": 100},
    metrics=("ppl", "probe"),
)
