"""2SSP: MLP neurons by activation norm plus attention sublayers by perplexity, against width alone (the paper's
stage-1-only ablation) and whole-block depth baselines (ShortGPT, the window-based angular distance) at no more
parameters removed. The record id starts with a digit, so this module is `claims/2ssp.py` (loaded by name) and the
method's module is `reference_impls/two_ssp.py`."""

from __future__ import annotations

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict
from ._kit import below, check, decoder_params, detail, note, speed_text, verdict, vs

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("2ssp", "reference_impls.two_ssp", "width",
               "narrow every MLP by neuron activation norms, then drop attention sublayers by calibration perplexity",
               True, ("params",), paper="2ssp"),
)  # fmt: skip

BLOCKS = 7  # whole blocks the depth arms remove: the most that stays at or under 2SSP's 25% (7/30 = 23.3%)
DEPTH = ("shortgpt", "window")


def _removed(r: Results, label: str) -> float:
    return 1 - decoder_params(r, label) / decoder_params(r, "dense")


def _claim(r: Results) -> Verdict:
    ours, width = _removed(r, "2ssp"), _removed(r, "stage1-only")
    depth = {label: _removed(r, label) for label in DEPTH}
    block = 1 / r["dense"].size.layers  # the share of one whole block
    matched = abs(ours - width) <= 0.005 and all(ours - block < d <= ours + 1e-9 for d in depth.values())
    dropped = detail(r, "2ssp", "order")
    return verdict(
        vs("2SSP", r.ppl("2ssp"), below("stage 1 only (MLP neurons)", r.ppl("stage1-only")),
           below("ShortGPT", r.ppl("shortgpt")), below("window", r.ppl("window"))).wrap("ppl "),
        check(matched, f"decoder parameters removed: 2SSP {ours:.1%}, stage 1 only {width:.1%}, ShortGPT "
              f"{depth['shortgpt']:.1%}, window {depth['window']:.1%} (depth arms: the most whole blocks at or under "
              "2SSP's share)" + ("" if matched else "; not matched: the depth arms' fixed block count does not fit "
                                 "this --params")),
        note(f"attention sublayers dropped {dropped}, MLP width {detail(r, '2ssp', 'mlp_width')}; probe acc_norm "
             f"{r.acc('2ssp'):.3f} / {r.acc('stage1-only'):.3f} / {r.acc('shortgpt'):.3f} / {r.acc('window'):.3f}"
             + speed_text(r, "2ssp") + speed_text(r, "shortgpt")),
    )  # fmt: skip


PAPER = PaperSpec(
    paper="2ssp",
    method="2ssp",
    runs=(
        Run("2ssp", "2ssp", {}, speed=True),
        Run("stage1-only", "2ssp", {"attention": 0}),
        Run("shortgpt", "shortgpt", {"layers": BLOCKS}, speed=True),
        Run("window", "deeper-layers", {"layers": BLOCKS, "selection": "angular", "heal_steps": 0}),
    ),
    claim="Removing a share {params} of the decoder layers' parameters with 2SSP (every MLP narrowed to its "
    "neurons with the largest activation norms, then the attention sublayers whose loss costs least calibration "
    "perplexity dropped one at a time, the split between the two set by the paper's rule with alpha 1.5) gives "
    "lower perplexity than the same share taken from the MLP neurons alone (the paper's stage-1-only ablation) and "
    "than removing whole blocks, 7 of 30 (23.3%, fewer parameters than 2SSP), chosen by ShortGPT's Block "
    "Influence or by the window-based angular distance without healing (2SSP: mixing width and depth beats either "
    "alone at 25%, 37.5% and 50%; here 25% on SmolLM2-135M, neuron norms on 16 windows of 512 tokens and the "
    "attention search on one 512-token window, against the paper's 32 sequences of 2048 tokens and one "
    "2048-token sequence)",
    check=_claim,
    defaults={"params": 0.25, "nsamples": 16, "seqlen": 512, "eval_tokens": 4096, "probe_items": 100},
    metrics=("ppl", "probe"),
)
