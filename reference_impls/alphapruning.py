"""AlphaPruning: per-layer sparsity from the heavy-tailed shape of each weight matrix's eigenvalue spectrum.

Paper:    Lu, Zhou, Liu, Wang, Mahoney, Yang. "AlphaPruning: Using Heavy-Tailed Self Regularization Theory for
          Improved Layer-wise Pruning of Large Language Models". NeurIPS 2024, arXiv:2410.10912.
          Record id: `alphapruning`.
Official: haiquanlu/AlphaPruning @ 5f0e984: `lib/esd_utils.py::net_esd_estimator` (the Hill estimator with the
          `xmin_peak` / `xmin_mid` choices), `lib/prune.py::ww_sparsity` (the block-wise linear mapping) and
          `prune_{wanda,magnitude,sparsegpt}_ww`; defaults from `main.py` and the README (`alpha_peak`,
          `--epsilon 0.3`, block-wise mapping; `scripts/` use 0.2-0.5 by model and base).
Idea:     Heavy-Tailed Self-Regularisation theory reads how well a layer is trained from the tail of the
          empirical spectral density (ESD) of its weights: the eigenvalues of W^T W (squared singular values)
          follow a power law p(x) ~ x^-alpha above some xmin, and a smaller alpha (a heavier tail) means a
          better-trained layer, which should keep more weights. For every linear, alpha is the Hill estimate
          alpha = 1 + n / sum_{x_j >= xmin} log(x_j / xmin) over the n eigenvalues from xmin up, with xmin the
          candidate that minimises the Kolmogorov-Smirnov distance between the tail and the fitted power law,
          candidates being the eigenvalues up to 1.5x the peak of the ESD (a 100-bin histogram of log10
          eigenvalues; `xmin="median"` takes the median eigenvalue instead, upstream's `alpha_mid`). The
          alphas of a decoder layer's linears are averaged into one value per layer; these are mapped linearly
          onto factors in [1 - epsilon, 1 + epsilon] (the largest alpha gets 1 + epsilon) and rescaled so the
          layers average the target sparsity S exactly: S_l = S * f_l / mean(f). Each layer is then pruned to
          S_l by Wanda (or magnitude, or SparseGPT). No data is needed for the allocation.
Differs:  (1) upstream rescales by parameter counts; here the layers are averaged unweighted, which is the same
          whenever every decoder layer has the same size (every LLaMA-style model as loaded) and is what the
          allocation contract checks; (2) the estimator runs in float64 on float32 singular values; a zero
          eigenvalue (a log of zero upstream) is left out, and so is a matrix with fewer than two non-zero
          eigenvalues (upstream fails on it); (3) upstream's lower end of the xmin window is
          log10(0.95 x peak) compared with eigenvalues on the linear scale (so for a peak below about 1.05
          there is no lower end): kept as upstream computes it, since it shaped the published ratios; if no
          candidate fits a power law with alpha > 1, upstream's argmin falls on the smallest eigenvalue (its
          estimate, or 0 outside the window), and so does this one; (4) a layer ratio above
          MAX_LAYER_SPARSITY is clipped and the others shifted to keep the mean (upstream does not clip; at 70%
          and epsilon 0.3 it takes a mean factor below about 0.91, most layers near the smallest alpha);
          (5) upstream's per-matrix mapping option, the metric cache, the mixed N:M variant and the other ESD
          metrics are not implemented.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from kb.results import Outcome

from . import magnitude, sparsegpt, wanda
from .harness.contract import Context
from .harness.layerwise import decoder_layers, prunable_linears, set_weight, small_ops
from .harness.options import SparsityConfig
from .primitives.budget import shift_to_budget

MAX_LAYER_SPARSITY = 0.999  # a layer keeps at least one weight in a thousand
BINS = 100  # histogram bins of log10 eigenvalues that locate the ESD's peak (upstream's default)


class Config(SparsityConfig):
    base: Literal["wanda", "magnitude", "sparsegpt"] = "wanda"  # the pruner applied at the allocated ratios
    epsilon: float = Field(0.3, ge=0, lt=1)  # layer factors span [1 - epsilon, 1 + epsilon] before rescaling
    xmin: Literal["peak", "median"] = "peak"  # upstream's alpha_peak (default) or alpha_mid


# ---- pure tensor math -----------------------------------------------------------------------
def esd(weight: torch.Tensor) -> torch.Tensor:
    """(out, in) -> the eigenvalues of W^T W (squared singular values), ascending, float64, zeros dropped."""
    eigs: torch.Tensor = torch.linalg.svdvals(weight.detach().float()).square().double().sort().values
    return eigs[eigs > 0]


def xmin_window(eigs: torch.Tensor) -> tuple[float, float]:
    """The eigenvalues that may serve as xmin: (low, high) around the ESD's peak, the left edge of the fullest of
    `BINS` log10 bins. As upstream, `low` is log10(0.95 x peak) though it is compared with linear eigenvalues."""
    log10 = eigs.log10()
    lo, hi = float(log10.min()), float(log10.max())
    peak = 10 ** float(torch.linspace(lo, hi, BINS + 1)[torch.histc(log10, BINS, lo, hi).argmax()])
    return math.log10(0.95 * peak), 1.5 * peak


def hill_alpha(eigs: torch.Tensor, xmin: str = "peak") -> float:
    """The power-law exponent of an ascending spectrum's tail (see the module docstring)."""
    n_all = eigs.numel()
    logs = eigs.log()
    tail = logs.flip(0).cumsum(0).flip(0)  # tail[i] = sum of log x_j for j >= i
    counts = n_all - torch.arange(n_all, dtype=torch.float64)  # n_i: eigenvalues from i up
    if xmin == "median":
        i = n_all // 2
        return float(1 + counts[i] / (tail[i] - counts[i] * logs[i]))
    low, high = xmin_window(eigs)
    index = torch.arange(n_all - 1)  # every eigenvalue but the largest may be xmin
    inside = (eigs[:-1] >= low) & (eigs[:-1] <= high)
    alphas = 1 + counts[:-1] / (tail[:-1] - counts[:-1] * logs[:-1])  # (N-1,) Hill estimate per xmin
    distances = torch.ones(n_all - 1, dtype=torch.float64)
    j = torch.arange(n_all)[None, :]  # (1, N)
    for cand in index[inside & (alphas > 1)].split(256):  # (C,) candidates, a bounded (C, N) block at a time
        a, n, x = alphas[cand, None], counts[cand, None], eigs[cand, None]
        fitted = 1 - (eigs[None, :] / x) ** (1 - a)  # the fitted power law's CDF over the tail
        gap = (fitted - (j - cand[:, None]) / n).abs().masked_fill(j < cand[:, None], 0.0)  # (C, N)
        distances[cand] = gap.max(1).values  # Kolmogorov-Smirnov distance of each candidate's fit
    alphas = alphas.masked_fill(~inside, 0.0)
    return float(alphas[distances.argmin()])  # first minimum: upstream's argmin


def layer_sparsities(metrics: list[float], sparsity: float, epsilon: float) -> list[float]:
    """Per-layer alphas -> per-layer sparsities: linear in alpha, mean exactly `sparsity`, max/min = (1+e)/(1-e)."""
    a = torch.tensor(metrics, dtype=torch.float64)
    spread = a.max() - a.min()
    if len(metrics) < 2 or float(spread) == 0.0:
        return [sparsity] * len(metrics)
    factor = (a - a.min()) / spread * (2 * epsilon) + (1 - epsilon)
    return [float(x) for x in factor * (sparsity / factor.mean())]


# ---- model driver (mutates `model` in place) ----------------------------------------------
def layer_alphas(model: nn.Module, xmin: str) -> list[list[float]]:
    """alpha of every linear of every decoder layer (weights only, untouched), leaving out a matrix with fewer
    than two non-zero eigenvalues (a one-row gate, as in Qwen2-MoE): it has no tail to fit."""
    with torch.inference_mode():
        spectra = [
            [esd(lin.weight) for lin in prunable_linears(layer).values()] for layer in decoder_layers(model)
        ]
    return [[hill_alpha(eigs, xmin) for eigs in layer if eigs.numel() > 1] for layer in spectra]


def prune_magnitude_layers(model: nn.Module, ratios: list[float]) -> None:
    """Magnitude pruning with one threshold per matrix, decoder layer i at `ratios[i]` (upstream's base)."""
    with torch.inference_mode():
        for layer, ratio in zip(decoder_layers(model), ratios, strict=True):
            cfg = magnitude.Config(sparsity=ratio)
            for linear in prunable_linears(layer).values():
                with small_ops(linear.weight.numel()):
                    weight = linear.weight.float()
                    set_weight(linear, weight.masked_fill(magnitude.magnitude_mask(weight, cfg), 0.0))


def prune(model: nn.Module, calib: torch.Tensor, config: Config, ctx: Context) -> Outcome:
    """Allocate per-layer sparsities from the weights' ESD shape, then prune with the base method at those."""
    alphas = ctx.dense_statistic(
        ("alphapruning-alphas", config.xmin), lambda: layer_alphas(model, config.xmin)
    )
    block = [sum(a) / len(a) for a in alphas]  # upstream's block-wise mapping: one mean alpha per layer
    sparsities = layer_sparsities(block, config.sparsity, config.epsilon)
    if any(not 0.0 <= s <= MAX_LAYER_SPARSITY for s in sparsities):
        ctx.log(f"alphapruning: per-layer sparsities up to {max(sparsities):.3f} exceed {MAX_LAYER_SPARSITY}: "
                f"clipped, the others shifted to keep the mean at {config.sparsity}")  # fmt: skip
        sparsities = shift_to_budget(sparsities, [1.0] * len(sparsities), config.sparsity * len(sparsities),
                                     0.0, MAX_LAYER_SPARSITY)  # fmt: skip
    if config.base == "wanda":
        wanda.prune_layers(model, calib, wanda.Config(sparsity=config.sparsity), sparsities, ctx)
    elif config.base == "sparsegpt":
        sparsegpt.prune_layers(model, calib, sparsegpt.Config(sparsity=config.sparsity), sparsities, ctx)
    else:
        prune_magnitude_layers(model, sparsities)
    return Outcome(
        kind="allocation", layer_sparsity=sparsities,
        details={"layer_alpha": [round(a, 4) for a in block], "base": config.base, "epsilon": config.epsilon,
                 "xmin": config.xmin},
    )  # fmt: skip
