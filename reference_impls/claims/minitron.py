"""Minitron: activation importance to a target width, then distillation from the dense model."""

from __future__ import annotations

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict
from ._kit import below, details, note, same_size, verdict, vs

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("minitron", "reference_impls.minitron", "width",
               "activation importance to a target width, optional distillation from the dense model", True,
               ("params",), paper="minitron"),
)  # fmt: skip


_TRAIN = {"recovery_steps": 20, "recovery_batch": 2, "lr": 1e-4}


def _claim(r: Results) -> Verdict:
    training = details(r, "activation-kd").get("recovery", {})
    return verdict(
        vs("activation", r.ppl("activation"), below("random", r.ppl("random"))).wrap("before training: ppl "),
        note(f"probe acc_norm {r.acc('activation'):.3f} vs {r.acc('random'):.3f}"),
        vs("distilled", r.ppl("activation-kd"), below("LM loss", r.ppl("activation-lm"))).wrap(
            f"after {training.get('steps')} steps ({training.get('tokens')} tokens, all decoder weights): ppl "),
        same_size(r, ("activation", "random", "activation-kd", "activation-lm")),
    )  # fmt: skip


PAPER = PaperSpec(
    paper="minitron",
    method="minitron",
    runs=(
        Run("activation", "minitron", {"importance": "activation"}, speed=True),
        # every arm has the same shape, so speed is measured once
        Run("random", "minitron", {"importance": "random"}),
        Run("activation-kd", "minitron", {"importance": "activation", "recovery": "kd", **_TRAIN}),
        Run("activation-lm", "minitron", {"importance": "activation", "recovery": "lm", **_TRAIN}),
    ),
    claim="Cutting every layer's MLP from 1536 to 1024 channels (the same parameter count in every arm), "
    "channels kept by activation importance give a lower perplexity than random channels before any "
    "training, and 20 steps of logit distillation from the dense model, first corrected by 20 LM-loss steps on "
    "the same calibration data (the Minitron approach's teacher correction), give a lower perplexity than 20 "
    "steps of plain LM-loss training with the same data, learning rate and weights trained (Minitron: "
    "distillation beats retraining, up to 16% better MMLU than training from scratch)",
    check=_claim,
    defaults={"nsamples": 64, "seqlen": 128, "eval_tokens": 2048, "probe_items": 100},
    metrics=("ppl", "probe"),
)
