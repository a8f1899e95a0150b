"""SLEB: remove blocks one at a time by the calibration loss of the shortened model, against ShortGPT's one-shot
lowest Block Influence at the same number of blocks."""

from __future__ import annotations

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict
from ._kit import below, detail, note, verdict, vs

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("sleb", "reference_impls.sleb", "depth",
               "remove blocks one at a time, each the one whose removal keeps calibration loss lowest (re-scored)",
               True, ("layers",), paper="sleb"),
)  # fmt: skip


def _claim(r: Results) -> Verdict:
    order = detail(r, "sleb", "order")
    bi = r.outcome("shortgpt")
    return verdict(
        vs("SLEB", r.ppl("sleb"), below("ShortGPT (lowest Block Influence)", r.ppl("shortgpt"))).wrap("ppl "),
        note(f"probe acc_norm {r.acc('sleb'):.3f} vs ShortGPT {r.acc('shortgpt'):.3f}"),
        note(f"SLEB removed {order} in that order; ShortGPT {bi.removed_layers if bi is not None else None}"),
    )  # fmt: skip


PAPER = PaperSpec(
    paper="sleb",
    method="sleb",
    runs=(
        Run("sleb", "sleb"),
        Run("shortgpt", "shortgpt", {"selection": "lowest"}),
    ),
    claim="Removing {layers} decoder blocks one at a time, each the block whose removal keeps the calibration loss of "
    "the shortened model lowest (re-scored after every removal, the first and the last block kept, as upstream), "
    "gives lower perplexity than removing the {layers} blocks with the lowest Block Influence in one shot "
    "(ShortGPT) (SLEB: verifying redundancy on the pruned model beats a similarity metric). Both score on the same "
    "2 x 256 calibration tokens; upstream searches on 128 x 2048 WikiText-2 tokens",
    check=_claim,
    # 6 of 30 blocks is SLEB's 20% setting; six greedy rounds over 28..23 candidates on 512 tokens take about
    # 100 s on tiny-llama (2 cores), the two evaluations with 200 probe items about 25 s
    defaults={"layers": 6, "nsamples": 2, "seqlen": 256, "eval_tokens": 2048, "probe_items": 200},
    metrics=("ppl", "probe"),
)
