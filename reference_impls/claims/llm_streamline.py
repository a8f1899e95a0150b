"""LLM-Streamline: replace the most similar window of layers by one trained MLP, against removing it."""

from __future__ import annotations

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict
from ._kit import below, check, decoder_params, detail, note, speed_text, verdict, vs

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("llm-streamline", "reference_impls.llm_streamline", "depth",
               "replace the most similar window of layers by one trained MLP", True, ("layers",),
               paper="llm-streamline"),
)  # fmt: skip


def _claim(r: Results) -> Verdict:
    same = detail(r, "streamline", "start") == detail(r, "plain", "start")
    extra = decoder_params(r, "streamline") - decoder_params(r, "plain")
    return verdict(
        check(same, f"window at layer {detail(r, 'streamline', 'start')} in both arms"),
        vs("with the trained MLP replacement", r.ppl("streamline"), below("plain removal", r.ppl("plain"))).wrap(
            "ppl "),
        note(f"probe acc_norm {r.acc('streamline'):.3f} vs {r.acc('plain'):.3f}; the replacement adds "
             f"{extra / 1e6:.2f}M decoder params ({decoder_params(r, 'streamline') / 1e6:.2f}M vs "
             f"{decoder_params(r, 'plain') / 1e6:.2f}M)" + speed_text(r, "streamline")),
    )  # fmt: skip


PAPER = PaperSpec(
    paper="llm-streamline",
    method="llm-streamline",
    runs=(
        Run("streamline", "llm-streamline", {"replacement": "mlp"}, speed=True),
        Run("plain", "llm-streamline", {"replacement": "none"}),
        Run(
            "streamline-identity-init",
            "llm-streamline",
            {"replacement": "mlp", "init": "identity"},
            extra=True,
        ),
    ),
    claim="Replacing the most similar window of {layers} consecutive layers by one MLP trained for 200 steps to "
    "map the window's input hidden states to its output gives lower perplexity than removing the same window "
    "(LLM-Streamline: a lightweight replacement beats plain layer removal)",
    check=_claim,
    defaults={"layers": 6, "nsamples": 16, "seqlen": 512, "eval_tokens": 2048, "probe_items": 200},
    metrics=("ppl", "probe"),
)
