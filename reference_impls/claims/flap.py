"""FLAP: fluctuation scores, one standardised global threshold over heads and channels, bias compensation."""

from __future__ import annotations

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict
from ._kit import below, check, decoder_params, note, verdict, vs

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("flap", "reference_impls.flap", "width",
               "retraining-free: fluctuation scores, one standardised global threshold over KV groups and MLP "
               "channels, removed channels' mean output folded into o_proj/down_proj biases", True, ("params",),
               paper="flap"),
)  # fmt: skip

_ARMS = ("flap", "no-bias", "llm-pruner", "wanda-sp")
# Wanda-sp, FLAP's uniform baseline, as LLM-Pruner's group removal with the `contribution` scores: ||x_j|| x
# ||W[:, j]|| per input channel of o_proj / down_proj summed over each group (upstream: ||x_j|| x mean_i |W_ij|),
# the same share removed from every layer, no bias, 128 calibration windows as upstream
_WANDA_SP = {
    "importance": "contribution",
    "keep_first": 0,
    "keep_last": 0,
    "num_examples": 128,
    "example_len": 128,
}


def _claim(r: Results) -> Verdict:
    dense = decoder_params(r, "dense")
    removed = {label: 1 - decoder_params(r, label) / dense for label in _ARMS}
    return verdict(
        vs("FLAP", r.ppl("flap"), below("the same removal without bias compensation", r.ppl("no-bias"))).wrap(
            "ppl "),
        vs("FLAP", r.ppl("flap"), below("LLM-Pruner", r.ppl("llm-pruner"), 0.9),
           below("Wanda-sp", r.ppl("wanda-sp"), 0.9)),
        note(f"probe acc_norm FLAP {r.acc('flap'):.3f}, without bias {r.acc('no-bias'):.3f}, LLM-Pruner "
             f"{r.acc('llm-pruner'):.3f}, Wanda-sp {r.acc('wanda-sp'):.3f}"),
        check(max(removed.values()) - min(removed.values()) <= 0.01, "decoder parameters removed: "
              + ", ".join(f"{label} {v:.2%}" for label, v in removed.items())),
    )  # fmt: skip


PAPER = PaperSpec(
    paper="flap",
    method="flap",
    runs=(
        Run("flap", "flap", {}, speed=True),
        Run("no-bias", "flap", {"bias": False}),  # the same scores and removal (the bias changes no score)
        Run("llm-pruner", "llm-pruner", {}),  # its own defaults: Taylor scores, first 4 / last 2 layers whole
        Run("wanda-sp", "llm-pruner", _WANDA_SP),
    ),
    claim="With {params} of the decoder's parameters removed and no retraining, FLAP (WIFV fluctuation scores "
    "standardised per layer and module, one global threshold over KV groups and MLP channels, bias compensation; "
    "calibrated on 256 windows of 128 tokens, the official run uses 1024) gives a lower perplexity than the same "
    "removal without bias compensation, and a perplexity at least 10% lower than LLM-Pruner's (Taylor groups, "
    "uniform in the middle layers) and than Wanda-sp's (activation-weighted column scores, uniform in every "
    "layer) at the same size (FLAP on LLaMA-7B at 20%: WikiText-2 perplexity 14.62 against 19.77 for LLM-Pruner "
    "and 22.12 for Wanda-sp, 128-token windows)",
    check=_claim,
    defaults={"params": 0.2, "nsamples": 256, "seqlen": 128, "eval_tokens": 4096, "probe_items": 100},
    metrics=("ppl", "probe"),
)
