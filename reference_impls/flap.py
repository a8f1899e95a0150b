"""FLAP: remove attention heads and MLP channels whose input barely fluctuates, then fold their mean into a bias.

Paper:    An, Zhao, Yu, Tang, Wang. "Fluctuation-based Adaptive Structured Pruning for Large Language Models".
          AAAI 2024, arXiv:2312.11983. Record id: `flap`.
Official: CASIA-IVA-Lab/FLAP, `lib/prune.py::prune_flap` (metrics table, standardisation, the AL-AM search,
          `compress` with its bias) and `lib/layerwrapper.py::BiasGPT` (running mean and fluctuation of each
          input channel); defaults from `scripts/llama_7b.sh`: `--metrics WIFV --structure AL-AM
          --pruning_ratio 0.2` with 1024 WikiText-2 calibration windows of 128 tokens, no retraining.
Idea:     (1) every input channel j of an output projection (o_proj for heads, down_proj for MLP channels) is
          scored by how much its input moves around its mean over the calibration tokens, weighted by the
          weight column it feeds: WIFV_j = Var_t(x_tj) * ||W[:, j]||^2; a channel whose input is nearly
          constant can be removed and its constant part restored (3); (2) the scores are standardised within
          every layer and module (attention channels first squared, as upstream does), a head's score is the
          mean over its channels, and one threshold over all heads and channels of the model, placed so the
          removed parameters hit the target share, gives every layer and module its own width ("AL-AM");
          (3) bias compensation: removing input channels R of W loses W[:, R] @ x_R, whose mean over the
          calibration tokens, W[:, R] @ mean(x_R), is added to the projection's bias, so the output keeps its mean.
Differs:  (1) GQA (SmolLM2: 9 query heads over 3 KV heads): the attention unit is a whole KV group (one key/value
          head with its query heads, `primitives.groups`), scored by the mean of its o_proj channels' standardised
          scores; LLaMA-1 has no GQA, so upstream's unit is one head; (2) the variance is exact over all
          calibration tokens (upstream's running update skips the first window's spread; constant factors cancel
          in the standardisation); (3) upstream keeps the units scoring strictly above the unit at which the
          cumulative parameter count is closest to the target; here the best-scoring prefix whose parameter count
          is closest to the target is kept, counted with each unit's real parameters (upstream: 512/3 channels per
          LLaMA head); with the `params` target the biases compensation adds are counted (also when `bias` is off,
          so that the ablation removes exactly the same units); equal scores keep their order (attention units
          before MLP channels, then by layer and index: upstream's order);
          (4) a layer keeps at least its best KV group and MLP channel (upstream has no such guard);
          (5) calibration is the run's corpus and size (the claim says which), not 1024 WikiText-2 windows;
          (6) a LLaMA config cannot give o_proj / down_proj alone a bias, so the config carries the flags
          `o_proj_bias` / `down_proj_bias` and the model is saved with the project's modeling file
          (`harness/pruned_llama.py`); every layer's o_proj and down_proj get a bias (zero where nothing was cut).
Use:      `kb prune flap --model tiny-llama --params 0.2 --save DIR`, then
          `AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)` and `generate` as with any LLaMA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from kb.errors import KBError
from kb.results import Outcome

from .harness.contract import PARAMS_TOLERANCE, Context
from .harness.layerwise import InputStats, decoder_layers, model_config, prune_layerwise
from .harness.pruned_llama import add_output_biases
from .primitives import groups as G
from .primitives.sizing import decoder_params


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ratio: float = Field(
        0.2, ge=0.0, lt=1.0
    )  # share of the attention and MLP weights removed (--pruning_ratio)
    metric: Literal["WIFV", "IFV", "WIFN"] = "WIFV"  # upstream's three channel metrics; WIFV is FLAP's
    bias: bool = True  # bias compensation (False: the same removal without it)
    params: float | None = None  # the `params` target: share of decoder parameters removed; replaces `ratio`


# ---- pure tensor functions ------------------------------------------------------------------------
def channel_metric(metric: str, mean: torch.Tensor, var: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per input channel of a projection W (out, in), from its inputs' mean and variance (in,): (in,)."""
    w = weight.detach().float()
    if metric == "IFV":  # input fluctuation alone
        return var
    if metric == "WIFV":  # fluctuation times the squared weight column
        return var * w.square().sum(0)
    if metric == "WIFN":  # input RMS times the mean |weight| of the column
        return (var + mean.square()).sqrt() * w.abs().mean(0)
    raise ValueError(f"unknown metric {metric!r}")


def standardise(x: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std over one layer's channels of one module (unbiased std, as torch.std); zeros if constant."""
    x = x.double()
    std = x.std()
    return torch.zeros_like(x) if not std > 0 else (x - x.mean()) / std


def keep_best(scores: torch.Tensor, weights: torch.Tensor, keep: float) -> torch.Tensor:
    """Mask (units,) of the best-scoring prefix whose summed `weights` (parameters) is closest to `keep`."""
    order = torch.sort(scores, descending=True, stable=True).indices
    kept = torch.cat([weights.new_zeros(1), weights[order].cumsum(0)])  # kept[n]: params of the n best units
    n = int(torch.argmin((kept - keep).abs()))  # the first (smallest) n on a tie
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    mask[order[:n]] = True
    return mask


def compensation(weight: torch.Tensor, mean: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """W[:, R] @ mean(x_R): the mean output (out,) the removed input channels R contributed."""
    return weight.detach().double()[:, removed] @ mean.double()[removed]


# ---- model driver (mutates `model` in place) ------------------------------------------------------
def input_moments(
    model: nn.Module, calib: torch.Tensor, ctx: Context
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Mean and variance over the calibration tokens of every o_proj and down_proj input, one dense pass."""
    found: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def record(_index: int, name: str, _linear: nn.Linear, stats: InputStats) -> None:
        if name.endswith(("o_proj", "down_proj")):
            mean, var = stats.mean_var()
            n = stats.tokens
            found[name] = (mean.cpu(), var.cpu() * n / max(n - 1, 1))  # the sample variance

    prune_layerwise(model, calib, record, stats="moments", batch_size=ctx.batch_size, progress=ctx.progress)
    return found


@dataclass(frozen=True)
class Unit:
    """One module of one layer: its family of groups, the projection they feed, and a score per group."""

    family: G.Family
    proj: nn.Linear
    name: str  # "layers.<i>.self_attn.o_proj" or "layers.<i>.mlp.down_proj"
    score: torch.Tensor  # (units,)


def unit_scores(
    model: nn.Module, moments: dict[str, tuple[torch.Tensor, torch.Tensor]], metric: str
) -> list[Unit]:
    """Every layer's KV-group family and MLP family with one standardised score per unit (attention first)."""
    layers: Any = decoder_layers(model)  # transformers' decoder layers: their parts are read as Any
    out: list[Unit] = []
    for kind in ("attn", "mlp"):
        for i, layer in enumerate(layers):
            family = G.kv_head_family(model, i) if kind == "attn" else G.mlp_family(model, i)
            name = f"layers.{i}.self_attn.o_proj" if kind == "attn" else f"layers.{i}.mlp.down_proj"
            proj: nn.Linear = layer.self_attn.o_proj if kind == "attn" else layer.mlp.down_proj
            per_channel = channel_metric(metric, *moments[name], proj.weight)  # (in,)
            if kind == "attn":  # upstream squares the attention metric before standardising
                per_channel = per_channel.square()
            score = standardise(per_channel).reshape(family.units, -1).mean(1)  # (units,)
            out.append(Unit(family, proj, name, score))
    return out


def prune(model: nn.Module, calib: torch.Tensor, config: Config, ctx: Context) -> Outcome:
    """Score every KV group and MLP channel, remove the lowest globally to the target, compensate with biases."""
    key = ("flap-input-moments", calib.data_ptr(), tuple(calib.shape))  # of the dense model
    moments = ctx.dense_statistic(key, lambda: input_moments(model, calib, ctx))
    units = unit_scores(model, moments, config.metric)
    weights = [torch.full((u.family.units,), float(u.family.params_per_unit(model)), dtype=torch.float64)
               for u in units]  # fmt: skip
    prunable = float(sum(w.sum() for w in weights))
    hidden = int(model_config(model).hidden_size)
    # the biases compensation adds (every o_proj / down_proj without one gets one) are counted in the target with
    # or without `bias`, so both remove the same units: the no-bias ablation differs in the bias alone
    gained = sum(u.proj.bias is None for u in units) * hidden
    dense = decoder_params(model)
    cut = config.ratio * prunable if config.params is None else config.params * dense + gained
    masks = keep_best(torch.cat([u.score for u in units]), torch.cat(weights), prunable - cut)
    removals: dict[G.Family, list[int]] = {}
    shifts: dict[str, torch.Tensor] = {}
    for u, kept in zip(units, masks.split([u.family.units for u in units]), strict=True):
        if not kept.any():  # never empty a module: keep its best unit
            kept[int(torch.argmax(u.score))] = True
        gone = (~kept).nonzero().flatten()
        if gone.numel():
            removals[u.family] = gone.tolist()
            column = next(m for m in u.family.members if m.param == f"model.{u.name}.weight")
            shifts[u.name] = compensation(u.proj.weight, moments[u.name][0], u.family.indices(column, gone))
    expected = G.analytic_params_removed(model, removals) - (gained if config.bias else 0)
    shapes = G.compact(model, removals)
    if config.bias:
        shapes.update(add_compensation(model, units, shifts))
    removed = dense - decoder_params(model)
    share = removed / dense
    if removed != expected:
        raise KBError(f"flap: removed {removed} decoder parameters, the groups hold {expected}")
    if config.params is not None and abs(share - config.params) > PARAMS_TOLERANCE:
        raise KBError(f"flap: --params {config.params} cannot be met on this model: removes {share:.3f}")
    n = len(decoder_layers(model))
    details: dict[str, object] = {
        "metric": config.metric, "bias_compensation": config.bias,
        "removed_kv_heads": {str(f.layer): g for f, g in removals.items() if f.kind == "kv-head"},
        "kv_heads": [G.attention_widths(model, i)[1] for i in range(n)],
        "mlp_widths": [G.mlp_width(model, i) for i in range(n)],
        "decoder_params_removed_fraction": round(share, 6),
    }  # fmt: skip
    if ctx.progress is not None:
        ctx.progress(1, 1)
    return Outcome(kind="width", shapes=shapes, details=details)


def add_compensation(
    model: nn.Module, units: list[Unit], shifts: dict[str, torch.Tensor]
) -> dict[str, list[int]]:
    """Give o_proj / down_proj a bias where they have none (announced in the config) and add each shift to it."""
    config = model_config(model)
    flags = {"o_proj_bias": any(u.proj.bias is None for u in units if u.family.kind == "kv-head"),
             "down_proj_bias": any(u.proj.bias is None for u in units if u.family.kind == "mlp")}  # fmt: skip
    add_output_biases(model, flags["o_proj_bias"], flags["down_proj_bias"])
    for flag, on in flags.items():
        if on:
            setattr(config, flag, True)
    modules = dict(model.named_modules())
    shapes = {}
    with torch.no_grad():
        for name, shift in shifts.items():
            bias = modules[f"model.{name}"].bias
            bias.add_(shift.to(bias.device, bias.dtype))
            shapes[f"model.{name}.bias"] = list(bias.shape)
    return shapes
