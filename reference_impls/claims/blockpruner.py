"""BlockPruner: sublayers removed one at a time by calibration perplexity, against whole blocks removed by the
same criterion (SLEB) and by Block Influence (ShortGPT), at no more parameters kept."""

from __future__ import annotations

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict
from ._kit import below, check, decoder_params, detail, note, verdict, vs

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("blockpruner", "reference_impls.blockpruner", "depth",
               "remove attention/MLP sublayers one at a time, each the one keeping calibration perplexity lowest",
               True, ("layers",), paper="blockpruner"),
)  # fmt: skip

BLOCKS = 4  # whole decoder layers removed by the block arms; BlockPruner removes at least their parameters


def _claim(r: Results) -> Verdict:
    dense, kept = decoder_params(r, "dense"), decoder_params(r, "blockpruner")
    block = max(decoder_params(r, label) for label in ("sleb", "shortgpt"))
    return verdict(
        vs("BlockPruner", r.ppl("blockpruner"), below("SLEB (whole blocks, same criterion)", r.ppl("sleb")),
           below("ShortGPT (whole blocks, Block Influence)", r.ppl("shortgpt"))).wrap("ppl "),
        check(kept <= block, f"decoder parameters removed: BlockPruner {1 - kept / dense:.1%}, block arms "
              f"{1 - block / dense:.1%}" + ("" if kept <= block else " (BlockPruner kept more)")),
        note(f"BlockPruner removed {detail(r, 'blockpruner', 'order')} in that order"),
    )  # fmt: skip


PAPER = PaperSpec(
    paper="blockpruner",
    method="blockpruner",
    runs=(
        # a size in parameters, not a module count: `--layers` reaches no arm (each fixes its size)
        Run("blockpruner", "blockpruner", {"params_of_layers": BLOCKS, "layers": None}),
        Run("sleb", "sleb", {"layers": BLOCKS}),
        Run("shortgpt", "shortgpt", {"layers": BLOCKS}),
    ),
    claim=f"Removing attention and MLP sublayers one at a time, each the one whose removal keeps calibration "
    f"perplexity lowest (re-scored after every removal), until at least the parameters of {BLOCKS} of the decoder "
    f"layers are gone, gives lower perplexity than removing {BLOCKS} whole blocks by the same criterion (SLEB, the "
    "paper's '- block' ablation) or by lowest Block Influence (ShortGPT, the paper's main comparison) "
    "(BlockPruner: sublayers are a finer, better unit). Ours: the paper removes about 22% of Llama-2-7B's "
    f"parameters and scores on 256 Alpaca samples; here {BLOCKS} of 30 layers' worth (13%) and one 128-token "
    "calibration window, which every arm scores on",
    check=_claim,
    # the sublayer search re-scores ~55 candidates per round over about 12 rounds: ~10 s a round on tiny-llama
    # (2 cores) for 128 tokens; SLEB's four rounds ~20 s; three evaluations without the probe ~15 s
    defaults={"nsamples": 1, "seqlen": 128, "eval_tokens": 2048},
    metrics=("ppl",),
)
