"""Minitron: width pruning by activation importance, then retraining by logit distillation from the dense model.

Paper:    Muralidharan, Sreenivas, Joshi, Chochowski, Patwary, Shoeybi, Catanzaro, Kautz, Molchanov. "Compact
          Language Models via Pruning and Knowledge Distillation". NeurIPS 2024, arXiv:2407.14679. Record id:
          `minitron`.
Official: NVlabs/Minitron holds the model cards only; the pruning code is NVIDIA Model Optimizer's
          `mcore_minitron` mode (Megatron-Core models only): importance hooks in
          `modelopt/torch/nas/plugins/megatron.py`.
Idea:     (1) score every width unit from forward activations alone on a calibration set: an MLP channel by
          its activation entering the down projection, an attention head by its output entering o_proj, a
          hidden (embedding) channel by the RMSNorm outputs; per channel the mean |x| over a sequence, then
          the L2 norm over sequences (ModelOpt's aggregation); (2) keep the top units of every layer down
          to a target architecture (e.g. MLP 1536 -> 1024 in every layer); (3) retrain the pruned model with
          logit-only knowledge distillation from the dense model (forward KL teacher || student), which the
          paper finds better than plain LM-loss retraining; iterate prune -> distill for larger cuts. The
          teacher is first *corrected*: fine-tuned briefly on the data it will be distilled on, as the
          follow-up report does when the original pre-training data is not at hand (Sreenivas et al., "LLM
          Pruning and Distillation in Practice: The Minitron Approach", arXiv:2408.11796).
Differs:  (1) the importance is `primitives.importance`'s `activation` estimator (ModelOpt's aggregation over
          Hugging Face layouts), attention pruned as whole KV groups when asked (`kv_heads`); (2) the target
          is one uniform width per axis (no architecture search); (3) retraining is a few steps of AdamW on
          every decoder weight over the run's calibration windows (`harness.recovery`: `distill_steps` with
          `train="all"`, or the same loop on next-token cross-entropy for the LM-loss baseline), with the same
          budget, learning rate and batch order in both cases; the paper distils on ~94B tokens; (4) the
          teacher is a copy of the model taken before pruning, held in memory during the steps, and corrected
          by `teacher_correction_steps` (default 20, batch `recovery_batch`, lr `lr`) LM-loss steps on every
          weight over the calibration windows (`minitron_approach.correct_teacher`, the code path the Minitron
          approach uses): without it the teacher is the unadapted dense model while the LM-loss arm adapts to
          the corpus; the student is pruned from the uncorrected model (the report prunes the corrected one),
          so that the distilled, the LM-loss and the untrained arms all start from the same pruned weights and
          the distilled arm differs only in its loss; details `teacher_correction` give its steps and the
          teacher's LM loss on the first calibration windows before and after.
Use:      `kb prune minitron --model tiny-llama --save DIR [--set recovery=kd --set recovery_steps=20]`; load
          with `AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)`.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from kb.errors import KBError
from kb.results import Outcome

from .harness.contract import Context
from .harness.layerwise import decoder_layers, model_config
from .harness.recovery import Budget, distill_steps, train_steps
from .minitron_approach import correct_teacher
from .primitives import groups as G
from .primitives.importance import group_importance, lowest
from .primitives.sizing import share_for_params


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mlp_keep: float = Field(2 / 3, gt=0.0, le=1.0)  # share of MLP channels kept in every layer (1536 -> 1024)
    kv_heads: int | None = Field(None, ge=1)  # KV groups kept per layer (None: attention untouched)
    hidden: int | None = Field(None, ge=1)  # hidden (embedding) channels kept (None: untouched)
    importance: Literal["activation", "random"] = "activation"
    num_examples: int = Field(
        1024, ge=1
    )  # calibration windows (paper: 1024 samples; capped by what is given)
    seed: int = 0  # random importance
    recovery: Literal["none", "kd", "lm"] = "none"  # distil from the dense model, or plain LM loss
    recovery_steps: int = Field(20, ge=0)
    teacher_correction_steps: int = Field(20, ge=0)  # kd: LM steps correcting the teacher (0: dense as is)
    recovery_batch: int = Field(2, ge=1)
    lr: float = Field(1e-4, gt=0)
    temperature: float = Field(1.0, gt=0)
    params: float | None = None  # the `params` target: share of decoder params removed; sets mlp_keep


# ---- pure helpers ---------------------------------------------------------------------------------
def keep_count(units: int, share: float) -> int:
    """Units kept for a share: rounded to nearest, at least one."""
    return max(1, min(units, int(units * share + 0.5)))


def drop_lowest(scores: torch.Tensor, keep: int) -> list[int]:
    """Indices to remove so that the `keep` highest scores stay (ties: the lower index stays)."""
    return lowest(scores, scores.numel() - keep)


# ---- model driver ---------------------------------------------------------------------------------
def params_mlp_keep(model: nn.Module, config: Config, params: float) -> float:
    """`mlp_keep` for the `params` target: the MLP width whose removals, with those of a `kv_heads` target, come
    closest to removing `params` of the decoder's parameters."""
    if config.hidden is not None:
        raise KBError(
            "minitron: --params sets the MLP width; with a hidden target too, give mlp_keep instead"
        )
    n = len(decoder_layers(model))
    fixed = 0
    if config.kv_heads is not None:
        kv = [G.kv_head_family(model, i) for i in range(n)]
        fixed = sum(max(0, f.units - config.kv_heads) * f.params_per_unit(model) for f in kv)
    sizes = [(f.units, f.params_per_unit(model)) for f in (G.mlp_family(model, i) for i in range(n))]

    def removed(share: float) -> int:
        return fixed + sum((units - keep_count(units, 1 - share)) * per_unit for units, per_unit in sizes)

    return 1 - share_for_params(model, params, removed, name="minitron")


def prune(model: nn.Module, calib: torch.Tensor, config: Config, ctx: Context) -> Outcome:
    if config.params is not None:
        config = config.model_copy(update={"mlp_keep": params_mlp_keep(model, config, config.params)})
    n = len(decoder_layers(model))
    families: list[G.Family] = []
    for i in range(n):
        if config.kv_heads is not None:
            families.append(G.kv_head_family(model, i))
        if config.mlp_keep < 1.0:
            families.append(G.mlp_family(model, i))
    if config.hidden is not None:
        families.append(G.hidden_family(model))
    if not families:
        raise KBError("minitron: nothing to prune (mlp_keep=1, no kv_heads, no hidden target)")
    targets = {"kv-head": config.kv_heads, "hidden": config.hidden}
    for f in families:
        want = targets.get(f.kind)
        if want is not None and want >= f.units:
            raise KBError(f"minitron: {f.name} has {f.units} units; keeping {want} removes nothing")
    teacher, correction = None, None
    # the teacher: the dense model, first corrected on the calibration windows (the Minitron approach)
    if config.recovery == "kd" and config.recovery_steps > 0:
        teacher = copy.deepcopy(model)
        if config.teacher_correction_steps:
            ctx.log(f"minitron: teacher correction, {config.teacher_correction_steps} LM steps")
            correction = correct_teacher(teacher, calib, config.teacher_correction_steps, config.recovery_batch,
                                         lr=config.lr, seed=ctx.seed + 1)  # fmt: skip
        teacher.eval()
    examples = calib[: config.num_examples]
    scores = group_importance(model, families, config.importance, tokens=examples,
                              chunk=ctx.batch_size or 4, seed=config.seed)  # fmt: skip
    removals: dict[G.Family, list[int]] = {}
    for f in families:
        keep = keep_count(f.units, config.mlp_keep) if f.kind == "mlp" else int(targets[f.kind] or f.units)
        removals[f] = drop_lowest(scores[f], keep)
    before = sum(p.numel() for p in model.parameters())
    shapes = G.compact(model, removals)
    after = sum(p.numel() for p in model.parameters())
    details: dict[str, object] = {
        "importance": config.importance,
        "mlp_widths": sorted({G.mlp_width(model, i) for i in range(n)}),
        "kv_heads": sorted({G.attention_widths(model, i)[1] for i in range(n)}),
        "hidden": int(model_config(model).hidden_size),
        "params_before": before, "params_after": after, "params_removed_fraction": round(1 - after / before, 4),
    }  # fmt: skip
    if ctx.progress is not None:
        ctx.progress(1, 1)
    if config.recovery != "none" and config.recovery_steps > 0:
        budget = Budget(config.recovery_steps, config.recovery_batch)
        ctx.log(
            f"minitron: {config.recovery} retraining, {budget.steps} steps of {budget.batch_size} windows"
        )
        if teacher is not None:
            report = distill_steps(model, teacher, calib, budget, lr=config.lr, train="all",
                                   temperature=config.temperature, seed=ctx.seed, progress=ctx.progress)  # fmt: skip
        else:
            params = list(decoder_layers(model).parameters())
            report = train_steps(model, params, calib, budget, lr=config.lr, seed=ctx.seed, progress=ctx.progress,
                                 kind="lm")  # fmt: skip
        details["recovery"] = report.summary()
        if correction is not None:
            details["teacher_correction"] = correction
        del teacher
    return Outcome(kind="width", shapes=shapes, details=details)
