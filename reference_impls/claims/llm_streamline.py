"""LLM-Streamline: replace the most similar window of layers by one trained MLP, against removing it."""

from __future__ import annotations

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict, finite
from ._kit import decoder_params, detail, speed_text

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("llm-streamline", "reference_impls.llm_streamline", "depth",
               "replace the most similar window of layers by one trained MLP", True, ("layers",),
               paper="llm-streamline"),
)  # fmt: skip


def _claim(r: Results) -> Verdict:
    rep, plain = r.ppl("streamline"), r.ppl("plain")
    same = detail(r, "streamline", "start") == detail(r, "plain", "start")
    extra = decoder_params(r, "streamline") - decoder_params(r, "plain")
    ok = same and finite(rep, plain) and rep < plain
    reason = (f"window at layer {detail(r, 'streamline', 'start')}: ppl with the trained MLP replacement {rep:.2f} vs "
              f"plain removal {plain:.2f}; probe acc_norm {r.acc('streamline'):.3f} vs {r.acc('plain'):.3f}; the "
              f"replacement adds {extra / 1e6:.2f}M decoder params ({decoder_params(r, 'streamline') / 1e6:.2f}M vs "
              f"{decoder_params(r, 'plain') / 1e6:.2f}M)" + speed_text(r, "streamline"))  # fmt: skip
    return ok, reason


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
