"""LaCo: collapse adjacent layers by summing parameter differences, against LLM-Pruner at the same share of
parameters (the paper's comparison) and against deleting the same layers without the merge."""

from __future__ import annotations

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict
from ._kit import above, below, check, decoder_params, detail, note, verdict, vs

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("laco", "reference_impls.laco", "depth",
               "collapse runs of adjacent layers into one by summed parameter differences, while outputs stay similar",
               True, ("layers",), paper="laco"),
)  # fmt: skip

SHARE = 0.2  # LLM-Pruner's share of decoder parameters: 6 of 30 equal layers


def _claim(r: Results) -> Verdict:
    dense, laco, width = (decoder_params(r, label) for label in ("dense", "laco", "llm-pruner"))
    same = abs(laco - width) <= 0.02 * dense
    forced, trials = detail(r, "laco", "forced_merges"), detail(r, "laco", "trials")
    kept = [t for t in trials if t["kept"]] if isinstance(trials, list) else []
    return verdict(
        vs("LaCo", r.acc("laco"), above("LLM-Pruner (no recovery)", r.acc("llm-pruner")), digits=3).wrap(
            "probe acc_norm "),
        vs("LaCo", r.ppl("laco"), below("the same layers deleted without merging", r.ppl("laco-drop"))).wrap(
            "ppl "),
        check(same, f"decoder parameters removed: LaCo {1 - laco / dense:.1%}, LLM-Pruner {1 - width / dense:.1%}"),
        note(f"merges {[(t['at'], t['absorbed'], t['similarity']) for t in kept]}, {forced} below the threshold; "
             f"ppl LLM-Pruner {r.ppl('llm-pruner'):.2f}, ShortGPT {r.ppl('shortgpt'):.2f}; probe acc_norm "
             f"dropped {r.acc('laco-drop'):.3f}, ShortGPT {r.acc('shortgpt'):.3f}"),
    )  # fmt: skip


PAPER = PaperSpec(
    paper="laco",
    method="laco",
    runs=(
        Run("laco", "laco"),
        Run("laco-drop", "laco", {"merge": False}),
        Run("llm-pruner", "llm-pruner", {"params": SHARE}),
        Run("shortgpt", "shortgpt"),
        Run("laco-released", "laco", {"rule": "released"}, extra=True),
    ),
    claim="Collapsing layers with LaCo (a layer absorbs the summed parameter differences of the C - 1 layers after "
    "it, C = 5 for 30 layers as the released notebook's 7 for 40, top-down, each merge kept while the final hidden "
    "states on 5 calibration sentences keep a cosine above 0.45 to the dense model's) until {layers} layers are "
    "gone gives higher multiple-choice probe accuracy than LLM-Pruner (block-wise Taylor, no recovery) at the same "
    "share of decoder parameters, the paper's comparison, and lower perplexity than deleting the same {layers} "
    "layers without the merge (LaCo: the merged layer inherits what the removed ones did). Ours: 16-token "
    "calibration windows stand in for the notebook's Wikipedia snippets, and the count stops the scan (if the "
    "threshold stops it first, the most similar merges are taken below it, as the verdict reports)",
    check=_claim,
    # LaCo's search (deep copies and 5 x 16-token forwards) runs once for both LaCo arms: seconds to a minute;
    # LLM-Pruner and ShortGPT a few seconds; five evaluations with 300 probe items ~90 s on tiny-llama
    defaults={"layers": 6, "nsamples": 10, "seqlen": 256, "eval_tokens": 2048, "probe_items": 300},
    metrics=("ppl", "probe"),
)
