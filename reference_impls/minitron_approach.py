"""The Minitron approach: width- or depth-prune a model, then distil it from the (optionally corrected) teacher.

Paper:    Sreenivas, Muralidharan, Joshi, Chochowski, et al. "LLM Pruning and Distillation in Practice: The
          Minitron Approach". arXiv:2408.11796 (NVIDIA tech report, 2024). Record id: `minitron-approach`.
Official: no training code; the models (Llama-3.1-Minitron-4B-Width / -Depth, Mistral-NeMo-Minitron-8B) are on
          Hugging Face and the pruning lives in NVIDIA Model Optimizer (`mcore_minitron`, Megatron models
          only), which scores MLP channels and embedding channels by their activations and layers by block
          importance.
Idea:     (1) optionally *correct* the teacher first: fine-tune the unpruned model briefly on the distillation
          data, because the original pre-training data is not available; (2) prune either width (MLP and
          hidden/embedding channels, by Minitron's activation importance: per channel the mean |x| over a
          sequence, L2 over sequences, on the down_proj input and on every RMSNorm output) keeping heads and
          layers, or depth (a contiguous block of layers, the block whose removal hurts the LM loss least);
          (3) distil the student from the teacher's logits (forward KL) for a few steps. The report's finding:
          at equal size the width-pruned student is more accurate, the depth-pruned one faster.
Sizes:    depth removes round(n / 4) layers by default (8 of SmolLM2's 30; the paper halves Llama-3.1-8B's
          32); width keeps 8/9 of the hidden channels (576 -> 512; the paper's 3/4 cannot reach the depth
          student's size on a model whose embedding holds a fifth of its parameters) and removes from every
          layer's MLP the channels needed so the width student has no more parameters than the depth student
          (within one MLP channel per layer), so the two students are compared at equal size.
Differs:  (1) N-step distillation (default 20 steps of 4 x 128 tokens of the run's corpus, every decoder
          weight trained, lr 1e-4) instead of ~94B tokens; (2) depth block chosen by LM loss on a few
          calibration windows (the report ranks blocks by downstream accuracy, ModelOpt by block importance);
          (3) teacher correction is off by default (`teacher_correction_steps`): with one corpus there is no
          distribution shift for it to fix; when on, the corrected model is also the one pruned, and details
          `teacher_correction` give the teacher's LM loss on the first calibration windows before and after
          (`correct_teacher`, which `minitron` runs on its teacher too).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from kb.errors import KBError
from kb.results import Outcome

from .harness.contract import Context
from .harness.layerwise import decoder_layers, model_config
from .harness.recovery import Budget, distill_steps, train_steps
from .harness.structure import remove_layers
from .primitives import groups as G
from .primitives.importance import group_importance, lm_loss, lowest
from .primitives.sizing import share_for_params


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    axis: Literal["width", "depth"] = "width"
    layers_removed: int | None = Field(
        None, ge=1
    )  # depth (and the width student's size); None = round(n / 4)
    hidden: int | None = Field(None, ge=1)  # width: hidden channels kept; None = round(8/9 of them)
    intermediate: int | None = Field(None, ge=1)  # width: MLP channels kept; None = match the depth student
    num_examples: int = Field(16, ge=1)  # calibration windows for the activation importance (width)
    search_examples: int = Field(4, ge=1)  # calibration windows for the LM loss of each block (depth)
    kd_steps: int = Field(20, ge=0)
    batch_size: int = Field(4, ge=1)
    lr: float = Field(1e-4, gt=0)
    temperature: float = Field(1.0, gt=0)
    teacher_correction_steps: int = Field(0, ge=0)
    seed: int = 0
    params: float | None = None  # the `params` target: share of decoder params removed; sets layers_removed


# ---- pure helpers ---------------------------------------------------------------------------------
def depth_count(n: int, config: Config) -> int:
    k = config.layers_removed if config.layers_removed is not None else math.floor(n / 4 + 0.5)
    if not 1 <= k < n:
        raise KBError(f"minitron-approach: cannot remove {k} of {n} layers")
    return k


def params_layers(model: nn.Module, params: float) -> int:
    """`layers_removed` for the `params` target: the depth student (whose size the width student matches) that
    comes closest to removing `params` of the decoder's parameters."""
    layers = decoder_layers(model)
    n, per_layer = len(layers), sum(p.numel() for p in layers[0].parameters())

    def count(share: float) -> int:
        return min(n - 1, math.floor(share * n + 0.5))

    return count(
        share_for_params(model, params, lambda share: count(share) * per_layer, name="minitron-approach")
    )


def matching_intermediate(params_now: int, params_target: int, layers: int, hidden: int, inter: int) -> int:
    """MLP channels to keep per layer so params_now - removed <= params_target (each channel: 3 x hidden per layer)."""
    excess = params_now - params_target
    drop = max(0, math.ceil(excess / (3 * hidden * layers)))
    if drop >= inter:
        raise KBError("minitron-approach: the width student cannot be made as small as the depth student")
    return inter - drop


def block_losses(model: nn.Module, tokens: torch.Tensor, k: int) -> list[float]:
    """LM loss with each contiguous block of k layers left out (cache off, so layer indices do not matter)."""
    lm: Any = model  # a transformers model: its decoder's layer list is swapped below
    layers = lm.model.layers
    kept = list(layers)
    out = []
    try:
        with torch.inference_mode():
            for start in range(len(kept) - k + 1):
                lm.model.layers = nn.ModuleList(kept[:start] + kept[start + k :])
                out.append(float(lm_loss(model, tokens)))
    finally:
        lm.model.layers = layers
    return out


CORRECTION_PROBE = 8  # calibration windows whose LM loss `correct_teacher` reports before and after


def correct_teacher(
    teacher: nn.Module, calib: torch.Tensor, steps: int, batch_size: int, *, lr: float, seed: int
) -> dict[str, object]:
    """Teacher correction, in place: `steps` LM-loss steps of AdamW on every weight of `teacher` over the
    calibration windows (n, t), so that the teacher fits the data it will be distilled on. Returns the training
    summary and the teacher's mean LM loss on the first `CORRECTION_PROBE` windows before and after."""
    probe = calib[:CORRECTION_PROBE]

    def probe_loss() -> float:
        with torch.inference_mode():
            return round(float(torch.stack([lm_loss(teacher, ids) for ids in probe.split(4)]).mean()), 4)

    before = probe_loss()
    report = train_steps(teacher, list(teacher.parameters()), calib, Budget(steps, batch_size), lr=lr, seed=seed,
                         kind="teacher-correction")  # fmt: skip
    return {**report.summary(), "calib_loss_before": before, "calib_loss_after": probe_loss(),
            "probe_windows": int(probe.shape[0])}  # fmt: skip


# ---- the two students -----------------------------------------------------------------------------
def prune_depth(model: nn.Module, tokens: torch.Tensor, k: int) -> tuple[list[int], dict[str, object]]:
    losses = block_losses(model, tokens, k)
    start = min(range(len(losses)), key=lambda s: (losses[s], s))
    removed = remove_layers(model, range(start, start + k))
    return removed, {"block_losses": [round(v, 4) for v in losses], "block_start": start}


def prune_width(
    model: nn.Module, tokens: torch.Tensor, config: Config, target: int
) -> tuple[dict[str, object], dict[str, list[int]]]:
    n = len(decoder_layers(model))
    h = int(model_config(model).hidden_size)
    hidden_keep = config.hidden if config.hidden is not None else math.floor(h * 8 / 9 + 0.5)
    if hidden_keep > h:
        raise KBError(f"minitron-approach: hidden {hidden_keep} exceeds the model's {h}")
    hidden = G.hidden_family(model)
    mlps = [G.mlp_family(model, i) for i in range(n)]
    inter = mlps[0].units
    params = sum(p.numel() for p in model.parameters()) - (h - hidden_keep) * hidden.params_per_unit(model)
    keep = config.intermediate or matching_intermediate(params, target, n, hidden_keep, inter)
    if keep > inter:
        raise KBError(f"minitron-approach: intermediate {keep} exceeds the model's {inter}")
    scores = group_importance(model, [hidden, *mlps], "activation", tokens=tokens, chunk=4)
    removals = {hidden: lowest(scores[hidden], h - hidden_keep)} | {
        f: lowest(scores[f], inter - keep) for f in mlps
    }
    shapes = G.compact(model, {f: u for f, u in removals.items() if u})
    return {"hidden": hidden_keep, "intermediate": keep}, shapes


# ---- model driver (mutates `model` in place) ------------------------------------------------------
def prune(model: nn.Module, calib: torch.Tensor, config: Config, ctx: Context) -> Outcome:
    """(Correct the teacher,) prune one axis, distil from the teacher."""
    n = len(decoder_layers(model))
    if config.params is not None:
        config = config.model_copy(update={"layers_removed": params_layers(model, config.params)})
    k = depth_count(n, config)
    details: dict[str, object] = {"axis": config.axis}
    if config.teacher_correction_steps:
        ctx.log(f"minitron-approach: teacher correction, {config.teacher_correction_steps} LM steps")
        steps = config.teacher_correction_steps
        details["teacher_correction"] = correct_teacher(
            model, calib, steps, config.batch_size, lr=config.lr, seed=config.seed + 1
        )
    teacher = copy.deepcopy(model).eval()
    before = sum(p.numel() for p in model.parameters())
    per_layer = sum(p.numel() for p in decoder_layers(model)[0].parameters())
    removed: list[int] = []
    if config.axis == "depth":
        removed, info = prune_depth(model, calib[: config.search_examples], k)
        shapes = {n: list(p.shape) for n, p in model.named_parameters() if n.startswith("model.layers.")}
    else:
        info, shapes = prune_width(model, calib[: config.num_examples], config, before - k * per_layer)
    details.update(info)
    pruned = sum(p.numel() for p in model.parameters())
    ctx.log(f"minitron-approach: {config.kd_steps} distillation steps")
    report = distill_steps(model, teacher, calib, Budget(config.kd_steps, config.batch_size), lr=config.lr,
                           train="all", temperature=config.temperature, seed=config.seed,
                           progress=ctx.progress)  # fmt: skip
    del teacher
    heads, kv = G.attention_widths(model, 0)
    details.update({
        "removed_layers": removed, "distillation": report.summary(),
        "training_tokens": report.tokens + config.teacher_correction_steps * config.batch_size * calib.shape[1],
        "final_shape": {"layers": len(decoder_layers(model)), "heads": heads, "kv_heads": kv,
                        "intermediate": G.mlp_width(model, 0), "hidden": int(model_config(model).hidden_size)},
        "params_before": before, "params_after": pruned, "depth_student_params": before - k * per_layer,
    })  # fmt: skip
    return Outcome(kind="width", shapes=shapes, removed_layers=removed, details=details)
