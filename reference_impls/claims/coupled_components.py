"""Coupled components: remove coupled KV groups and MLP channels scored by the data they pass on."""

from __future__ import annotations

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict
from ._kit import below, details, note, same_size, verdict, vs

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("coupled-components", "reference_impls.coupled_components", "width",
               "remove coupled KV groups and MLP channels scored by the data they pass on, optional LoRA", True,
               ("params",), paper="coupled-components"),
)  # fmt: skip


def _claim(r: Results) -> Verdict:
    removed = details(r, "coupled").get("params_removed_fraction")
    training = details(r, "coupled-tuned").get("recovery", {})
    return verdict(
        vs("data-dependent coupled scores", r.ppl("coupled"), below("weight magnitude", r.ppl("magnitude"))).wrap(
            "ppl "),
        vs(f"after {training.get('steps')} LoRA steps ({training.get('tokens')} tokens)", r.ppl("coupled-tuned"),
           below("before", r.ppl("coupled"))),
        note(f"probe acc_norm {r.acc('coupled'):.3f} vs {r.acc('magnitude'):.3f}, tuned {r.acc('coupled-tuned'):.3f}; "
             f"{removed} of the parameters removed"),
        same_size(r, ("coupled", "magnitude", "coupled-tuned")),
    )  # fmt: skip


PAPER = PaperSpec(
    paper="coupled-components",
    method="coupled-components",
    runs=(
        Run("coupled", "coupled-components", {"importance": "contribution"}, speed=True),
        Run("magnitude", "coupled-components", {"importance": "l2"}, speed=True),
        # fine-tuning keeps the coupled arm's shape, so its speed is that arm's
        Run("coupled-tuned", "coupled-components", {"importance": "contribution", "recovery_steps": 20}),
    ),
    claim="Removing a quarter of the KV groups and MLP channels of every layer but the first and the last "
    "(20% of the parameters, the same count in every arm), coupled groups scored by the data flowing through "
    "them give a lower perplexity than groups scored by weight magnitude alone, and 20 LoRA fine-tuning steps "
    "lower it further (coupled components: 20% fewer parameters keep at least 94.4% of the original scores "
    "after minor fine-tuning)",
    check=_claim,
    defaults={"nsamples": 64, "seqlen": 128, "eval_tokens": 2048, "probe_items": 100},
    metrics=("ppl", "probe"),
)
