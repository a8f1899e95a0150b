"""K-prune: retraining-free width pruning by knowledge scores, a FLOPs-budget mask search and a least-squares
re-solve of each pruned sublayer."""

from __future__ import annotations

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict
from ._kit import below, check, details, note, verdict, vs

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("k-prune", "reference_impls.k_prune", "width",
               "retraining-free: knowledge scores, FLOPs-budget mask search, least-squares re-solve per sublayer",
               True, ("params",), paper="k-prune"),
)  # fmt: skip


def _claim(r: Results) -> Verdict:
    labels = ("k-prune", "same-masks", "magnitude")
    removed = {
        label: float(details(r, label).get("prunable_flops_removed_fraction", float("nan")))
        for label in labels
    }
    params = {label: r[label].size.params_total for label in labels}
    digest = details(r, "k-prune").get("mask_digest")
    same = digest is not None and digest == details(r, "same-masks").get("mask_digest")
    return verdict(
        vs("K-prune", r.ppl("k-prune"), below("the same masks without the re-solve", r.ppl("same-masks"))).wrap(
            "ppl "),
        vs("the same masks without the re-solve", r.ppl("same-masks"), below("magnitude", r.ppl("magnitude"))),
        check(same, "identical masks in the two K-prune arms" if same else "the two K-prune arms' masks differ"),
        note(f"probe acc_norm {r.acc('k-prune'):.3f} / {r.acc('same-masks'):.3f} / {r.acc('magnitude'):.3f}"),
        check(all(0.25 <= v <= 0.26 for v in removed.values()), "prunable FLOPs removed "
              + ", ".join(f"{label} {v:.2%}" for label, v in removed.items())
              + " (the budget is FLOPs: arms keep different mixes of KV groups and MLP channels, so parameter counts "
              + "differ slightly: " + ", ".join(f"{label} {n / 1e6:.2f}M" for label, n in params.items()) + ")"),
    )  # fmt: skip


PAPER = PaperSpec(
    paper="k-prune",
    method="k-prune",
    runs=(
        Run("k-prune", "k-prune", {"importance": "knowledge", "reconstruct": True}, speed=True),
        # the identical-mask ablation: K-prune's own masks with the original weights (no re-solve)
        Run(
            "same-masks",
            "k-prune",
            {"importance": "knowledge", "reconstruct": True, "masks_only": True},
            speed=True,
        ),
        Run("magnitude", "k-prune", {"importance": "magnitude", "reconstruct": False}, speed=True),
        # the official no-tuning setting (masks searched on the untuned model): context, not in the claim
        Run(
            "no-reconstruction",
            "k-prune",
            {"importance": "knowledge", "reconstruct": False},
            speed=True,
            extra=True,
        ),
    ),
    claim="Removing 25% of the prunable FLOPs (KV groups and MLP channels) without any retraining, K-prune "
    "(knowledge scores re-measured before every sublayer; FLOPs-budget mask search; a least-squares re-solve of "
    "each pruned sublayer on 160 x 128 = 20,480 calibration tokens, the official run uses 100K, with a ridge "
    "toward the original weights) gives a lower perplexity than the identical masks without the re-solve, "
    "which in turn beat weight-magnitude head/channel pruning under the same budget (K-prune: up to 58.02 "
    "points higher F1 than earlier retraining-free pruning on SQuAD at 80% compression)",
    check=_claim,
    defaults={"nsamples": 160, "seqlen": 128, "eval_tokens": 2048, "probe_items": 100},
    metrics=("ppl", "probe"),
    draws=3,  # pre-registered: the committed margin was within 10% of the bound
)
