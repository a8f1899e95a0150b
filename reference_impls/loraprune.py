"""LoRAPrune: prune heads and MLP channels during LoRA fine-tuning, scored with gradients of the LoRA matrices only.

Paper:    Zhang, Chen, Shen, Yang, Ou, Yu, Zhuang. "LoRAPrune: Structured Pruning Meets Low-Rank
          Parameter-Efficient Fine-Tuning". Findings of ACL 2024, arXiv:2305.18403. Record id: `loraprune`.
Official: aim-uofa/LoRAPrune, `loraprune/utils.py` (`compute_sensitivity`, `update_sensitivity_dict`,
          `local_prune`, `schedule_sparsity_ratio`), `loraprune/trainer.py` (score, schedule and prune between
          backward and optimiser step); defaults ratio 0.5, LoRA r 8 / alpha 16 / dropout 0.05 on all seven
          linears, lr 1e-4, `prune_freq` 10, moving average 0.9; the first floor(0.1 L) layers and the last
          layer are never pruned. (Independent reimplementation; no code copied.)
Idea:     every adapted linear computes x (W0 + s B A)^T. One SGD step on A and B changes B A by about
          G^ = dB A + B dA - dB dA (dA, dB the LoRA gradients), which stands in for dL/dW, so a weight's
          first-order importance |G^ * (W0 + s B A)| needs no gradient of the frozen base weights (which may
          then stay 8-bit); element scores are summed per head and per MLP channel over every matrix they
          touch (in the official code each matrix's per-unit vector is L2-normalised first), smoothed by a
          moving average across steps, and the lowest units of every prunable layer are masked step by step
          following a cubic schedule while LoRA keeps training; at the end the masked units are removed and
          LoRA is merged.
Differs:  (1) attention units are whole KV groups (SmolLM2: 3 query heads + 1 KV head; the official grouping
          assumes one KV head per query head); (2) a final prune at exactly floor(ratio x units) after the last
          step (upstream's `ratio < target` gate stops one unit short) and monotone masks (a pruned unit never
          returns); (3) no gradient clipping, 8-bit base weights, DeepSpeed or instruction data: the steps run
          on the run's calibration windows; (4) every criterion multiplies its gradient by the same effective
          weight W0 + s B A (the `grad` baseline, the vanilla full-gradient Taylor score, uses the true dL/dW0,
          which equals dL/dW_eff), so the arms differ only in the gradient used.
Memory:   each run reports `grad_bytes_peak` (bytes of all gradient tensors held at the optimiser step: LoRA
          matrices only for `lora`, plus every prunable base weight for `grad`) and `rss_peak_increase_bytes`
          (growth of the process's peak resident size over the training loop, `harness.memory.PeakRSS`; with
          `measure_rss`, as it varies from run to run).
Use:      `kb prune loraprune --model tiny-llama --save DIR`; load with
          `AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, cast

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from kb.errors import KBError
from kb.results import Outcome

from .harness.contract import Context
from .harness.layerwise import decoder_layers
from .harness.memory import PeakRSS, grad_bytes
from .harness.recovery import Budget, LoRALinear, add_lora, merge_lora, train_steps
from .primitives import groups as G
from .primitives.importance import member_sums
from .primitives.sizing import share_for_params

Criterion = Literal["lora", "grad", "magnitude", "random"]


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ratio: float = Field(0.5, ge=0.0, lt=1.0)  # final share of KV groups and of MLP channels pruned per layer
    criterion: Criterion = "lora"
    mode: Literal["code", "paper"] = (
        "code"  # code: |G^ W| and per-matrix L2 normalisation; paper: (G^ W)^2, plain sum
    )
    attention: Literal["kv-head", "none"] = "kv-head"
    keep_first: int | None = Field(None, ge=0)  # None: floor(0.1 x layers), as upstream
    keep_last: int = Field(1, ge=0)
    steps: int = Field(20, ge=1)  # optimiser steps T
    batch: int = Field(2, ge=1)  # calibration windows per step
    prune_freq: int = Field(10, ge=1)
    initial_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    ema: float = Field(0.9, ge=0.0, lt=1.0)
    lr: float = Field(1e-4, gt=0)
    lora_rank: int = Field(8, ge=1)
    lora_alpha: float = Field(16.0, gt=0)
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    seed: int = 0  # random criterion
    measure_rss: bool = False  # also report the peak RSS growth of the training loop (varies run to run)
    params: float | None = None  # the `params` target: share of decoder parameters removed; sets `ratio`


# ---- pure helpers ---------------------------------------------------------------------------------
def lora_grad_estimate(
    a: torch.Tensor, b: torch.Tensor, grad_a: torch.Tensor, grad_b: torch.Tensor
) -> torch.Tensor:
    """G^ = B A - (B - dB)(A - dA) = dB A + B dA - dB dA: the change of B A under one unit SGD step."""
    return grad_b @ a + b @ grad_a - grad_b @ grad_a


def element_scores(grad: torch.Tensor | None, weight: torch.Tensor, mode: str) -> torch.Tensor:
    """|g * w| (code) or (g * w)^2 (paper); without a gradient (magnitude) |w|."""
    w = weight.float()
    if grad is None:
        return w.abs()
    first = grad.float() * w
    return first.abs() if mode == "code" else first.square()


def combine_members(parts: Sequence[torch.Tensor], normalize: bool) -> torch.Tensor:
    """Sum the per-unit vectors of a group's matrices, each L2-normalised first when `normalize`."""
    total = torch.zeros_like(parts[0], dtype=torch.float32)
    for part in parts:
        v = part.float()
        total += v / v.norm().clamp_min(1e-12) if normalize else v
    return total


def cubic_ratio(
    step: int, total: int, initial: float, final: float, warm: float = 0.1, cool: float = 0.1
) -> float:
    """Pruning ratio at a step: `initial` during warm-up, `final` after cool-down, a cubic ramp in between."""
    start, end = warm * total, (1.0 - cool) * total
    if step <= start:
        return initial
    if step > end:
        return final
    return final + (initial - final) * (1.0 - (step - start) / (end - start)) ** 3


def update_ema(state: torch.Tensor | None, value: torch.Tensor, lam: float) -> torch.Tensor | None:
    """lam * state + (1 - lam) * value from a zero start; a value with a NaN leaves the state as it was."""
    if torch.isnan(value).any():
        return state
    previous = torch.zeros_like(value) if state is None else state
    return lam * previous + (1.0 - lam) * value


def shrink_mask(keep: torch.Tensor, scores: torch.Tensor, count: int) -> torch.Tensor:
    """Prune the lowest-scoring kept units until `count` are pruned in all (never revives a pruned unit)."""
    keep = keep.clone()
    need = count - int((~keep).sum())
    if need <= 0:
        return keep
    candidates = torch.nonzero(keep).flatten()
    order = sorted(candidates.tolist(), key=lambda u: (float(scores[u]), u))
    keep[order[:need]] = False
    return keep


def final_count(units: int, ratio: float) -> int:
    """Units of a family pruned at `ratio`: rounded down, never the last one."""
    return min(units - 1, math.floor(ratio * units))


def prunable_layers(n: int, keep_first: int | None, keep_last: int) -> list[int]:
    first = int(0.1 * n) if keep_first is None else keep_first
    return list(range(first, max(first, n - keep_last)))


# ---- the training-time pruner -------------------------------------------------------------------------
class MaskedPruner:
    """Output masks on q/k/v/gate/up, the moving-average group scores, and the pruning events."""

    def __init__(self, model: nn.Module, families: list[G.Family], config: Config) -> None:
        self.model, self.families, self.config = model, families, config
        self.keep = {f: torch.ones(f.units, dtype=torch.bool) for f in families}
        self.scores: dict[G.Family, torch.Tensor | None] = dict.fromkeys(families)
        self.gen = torch.Generator().manual_seed(config.seed)
        self.grad_peak = 0
        self.events: list[dict[str, float]] = []
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        for f in families:
            for m in f.members:
                if m.dim == 0 and m.param.endswith("weight"):
                    module = self.module(m.param)
                    self._hooks.append(module.register_forward_hook(self._masker(f, m.block)))

    def module(self, param: str) -> nn.Module:
        return self.model.get_submodule(param.removesuffix(".weight"))

    def _masker(
        self, family: G.Family, block: int
    ) -> Callable[[nn.Module, tuple[Any, ...], torch.Tensor], torch.Tensor]:
        def hook(_m: nn.Module, _args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
            keep = self.keep[family]
            if bool(keep.all()):
                return out
            mask = keep.repeat_interleave(block).to(out.dtype)
            return out * mask

        return hook

    def remove_hooks(self) -> None:
        for h in self._hooks:
            h.remove()

    def trainable(self) -> list[nn.Parameter]:
        return [p for a in self.adapters() for p in (a.lora_a, a.lora_b)]

    def adapters(self) -> list[LoRALinear]:
        return [m for m in self.model.modules() if isinstance(m, LoRALinear)]

    def base_weights(self) -> list[nn.Parameter]:
        """The base weights of every matrix a prunable group touches (the `grad` criterion needs their gradient)."""
        names = dict.fromkeys(m.param for f in self.families for m in f.members if m.param.endswith("weight"))
        out = []
        for name in names:
            mod = self.module(name)
            assert isinstance(mod, LoRALinear)
            out.append(cast(nn.Parameter, mod.base.weight))  # a Parameter, which nn.Linear types as Tensor
        return out

    def member_scores(self, param: str) -> torch.Tensor:
        mod = self.module(param)
        assert isinstance(mod, LoRALinear)
        with torch.no_grad():
            effective = torch.addmm(mod.base.weight, mod.lora_b, mod.lora_a, alpha=mod.scale)
            crit = self.config.criterion
            grad: torch.Tensor | None
            if crit == "lora":
                ga, gb = mod.lora_a.grad, mod.lora_b.grad
                if ga is None or gb is None:
                    return torch.full_like(effective, float("nan"))
                grad = lora_grad_estimate(mod.lora_a, mod.lora_b, ga, gb)
            elif crit == "grad":
                grad = mod.base.weight.grad
                if grad is None:
                    return torch.full_like(effective, float("nan"))
            else:
                return effective.abs_()
            if effective.dtype == torch.float32:  # in place: these are the largest tensors of a step
                effective.mul_(grad)
                return effective.abs_() if self.config.mode == "code" else effective.square_()
            return element_scores(grad, effective, self.config.mode)

    def score(self) -> None:
        """Update every family's moving-average score from the current gradients."""
        cache: dict[str, torch.Tensor] = {}
        for f in self.families:
            if self.config.criterion == "random":
                value = torch.rand(f.units, generator=self.gen)
            else:
                parts = []
                for i, m in enumerate(f.members):
                    if not m.param.endswith("weight"):
                        continue
                    if m.param not in cache:
                        cache[m.param] = self.member_scores(m.param)
                    parts.append(member_sums(f, i, cache[m.param]))
                value = combine_members(parts, normalize=self.config.mode == "code")
            self.scores[f] = update_ema(self.scores[f], value, self.config.ema)

    def prune_to(self, ratio: float) -> None:
        for f in self.families:
            count = final_count(f.units, ratio)
            scores = self.scores[f]
            if scores is None:
                scores = torch.zeros(f.units)
            self.keep[f] = shrink_mask(self.keep[f], scores, count)

    def after_backward(self, step: int) -> None:
        self.grad_peak = max(self.grad_peak, grad_bytes(self.model))
        self.score()
        c = self.config
        ratio = cubic_ratio(step, c.steps, c.initial_ratio, c.ratio)
        if step % c.prune_freq == 0 and c.initial_ratio < ratio < c.ratio:
            self.prune_to(ratio)
            self.events.append({"step": step, "ratio": round(ratio, 4)})


# ---- model driver ---------------------------------------------------------------------------------
def prune(model: nn.Module, calib: torch.Tensor, config: Config, ctx: Context) -> Outcome:
    n = len(decoder_layers(model))
    layers = prunable_layers(n, config.keep_first, config.keep_last)
    if not layers:
        raise KBError(f"loraprune: no prunable layer in a {n}-layer model (keep_first {config.keep_first}, "
                      f"keep_last {config.keep_last})")  # fmt: skip
    attention = "kv-head" if config.attention == "kv-head" else "none"
    families = [f for i in layers for f in G.layer_families(model, i, attention, True)]  # type: ignore[arg-type]
    if config.params is not None:  # the final ratio whose removals come closest to the target (before LoRA)
        sizes = [(f.units, f.params_per_unit(model)) for f in families]

        def removed(ratio: float) -> int:
            return sum(final_count(units, ratio) * per_unit for units, per_unit in sizes)

        config = config.model_copy(
            update={"ratio": share_for_params(model, config.params, removed, name="loraprune")}
        )
    before = sum(p.numel() for p in model.parameters())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ctx.seed)
        add_lora(model, config.lora_rank, config.lora_alpha, config.lora_dropout)
    pruner = MaskedPruner(model, families, config)
    budget = Budget(config.steps, config.batch)
    trainable = sum(p.numel() for p in pruner.trainable())
    also = pruner.base_weights() if config.criterion == "grad" else []
    try:
        with PeakRSS() as peak:
            report = train_steps(model, pruner.trainable(), calib, budget, lr=config.lr, seed=ctx.seed,
                                 progress=ctx.progress, kind="loraprune", after_backward=pruner.after_backward,
                                 also_grad=also)  # fmt: skip
        pruner.prune_to(config.ratio)  # the final ratio exactly
    finally:
        pruner.remove_hooks()
        merge_lora(model)
    removals = {f: [u for u in range(f.units) if not bool(pruner.keep[f][u])] for f in families}
    expected = G.analytic_params_removed(model, removals)
    shapes = G.compact(model, {f: r for f, r in removals.items() if r})
    after = sum(p.numel() for p in model.parameters())
    if before - after != expected:
        raise KBError(f"loraprune: removed {before - after} parameters, the groups hold {expected}")
    details: dict[str, object] = {
        "criterion": config.criterion, "mode": config.mode, "pruned_layers": layers,
        "removed_kv_groups": {str(f.layer): len(r) for f, r in removals.items() if f.kind == "kv-head" and r},
        "removed_mlp_channels": {str(f.layer): len(r) for f, r in removals.items() if f.kind == "mlp" and r},
        "prune_events": pruner.events, "training": report.summary(),
        "trainable_params": trainable,
        "grad_bytes_peak": pruner.grad_peak,
        "params_before": before, "params_after": after, "params_removed_fraction": round(1 - after / before, 4),
    }  # fmt: skip
    if config.measure_rss:
        details["rss_peak_increase_bytes"] = peak.increase
    if config.params is not None:
        details["ratio"] = config.ratio  # derived from the target
    return Outcome(kind="width", shapes=shapes, details=details)
