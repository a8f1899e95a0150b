"""How much each dependency group matters: importance estimators over the groups of `primitives.groups`.

Every estimator ends in one score per group (higher = keep). Weight-based estimators first score every
element of every member tensor, then sum a group's elements inside each member and combine the members
with `reduce` (`sum`, `mean` or `max`), as LLM-Pruner does (`group_reduction`, default sum):

- `taylor`  first-order Taylor, |w * dL/dw| per element ("param_first", LLM-Pruner's code default): removing
            a weight w changes the loss by about -w * dL/dw.
- `second`  the second-order diagonal term, 1/2 * w^2 * F with F the diagonal Fisher (mean over calibration
            sequences of the squared per-sequence gradient), which stands in for the Hessian diagonal
            ("param_second"; upstream leaves out the 1/2, a constant factor that changes no ranking).
- `mix`     |w * g - 1/2 * w^2 * F|: both terms of the expansion ("param_mix").
- `vectorize` |sum of w * g| over each member's part of the group: the first-order loss change of
            removing the whole part at once (the signs inside a group can cancel).
- `l2` / `l1`  w^2 / |w| (magnitude; no data).
- `activation` (Minitron) from forward activations only: an MLP channel by its activation entering
            down_proj, a query head by its slice of the attention output entering o_proj (a KV group: the
            L2 norm over its query heads), a hidden channel by the RMSNorm outputs; per channel the mean |x|
            over a sequence, then the L2 norm over sequences (NVIDIA ModelOpt's aggregation).
- `contribution` (the coupled-components reconstruction) from forward activations and weights: each input
            channel c of a group's output projection (o_proj for heads, down_proj for MLP channels) by
            ||x_c||_2 * ||W_out[:, c]||_2, the size of what the channel adds to the projection's output
            over the calibration tokens (Wanda's |W| * ||X|| at the level of a whole column), summed over
            the group's channels. `channel_energy` gives the squared, per-column form that K-prune calls
            representational knowledge.
- `random`  uniform scores from a seeded generator.

Gradients (`loss_gradients`) need autograd, so they run outside `inference_mode`, for the member tensors
only (everything else is frozen while they run), over chunks of calibration sequences whose gradients are
accumulated (weighted so the sum is the gradient of the mean loss over all of them): memory stays at one
chunk's activations plus one gradient per scored tensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from kb.errors import KBError

from ..harness.layerwise import decoder_layers, input_embedding
from .groups import Family

Estimator = Literal[
    "taylor", "second", "mix", "vectorize", "l2", "l1", "activation", "contribution", "random"
]
Reduce = Literal["sum", "mean", "max"]
ESTIMATORS: tuple[str, ...] = (
    "taylor", "second", "mix", "vectorize", "l2", "l1", "activation", "contribution", "random",
)  # fmt: skip
_NEEDS_GRAD = {"taylor", "vectorize", "mix"}
_NEEDS_FISHER = {"second", "mix"}


@dataclass
class Gradients:
    grad: dict[str, torch.Tensor]  # gradient of the mean calibration loss
    fisher: dict[str, torch.Tensor] | None  # mean over sequences of the squared per-sequence gradient
    loss: float  # mean calibration loss at the current weights


# ---- gradients ---------------------------------------------------------------------------------
def lm_loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of `ids` (b, t) under `model`, in the logits' precision (at least float32)."""
    logits = model(input_ids=ids, use_cache=False).logits[:, :-1]
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1).to(logits.device))


def loss_gradients(
    model: nn.Module,
    tokens: torch.Tensor,
    names: Iterable[str],
    *,
    chunk: int = 1,
    fisher: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Gradients:
    """Gradient of the mean LM loss over `tokens` (n, t) for the named parameters; with `fisher`, also the
    per-sequence squared-gradient mean (then sequences go one at a time, whatever `chunk` says)."""
    params = dict(model.named_parameters())
    wanted = {n: params[n] for n in dict.fromkeys(names)}
    device = input_embedding(model).weight.device
    flags = {n: p.requires_grad for n, p in params.items()}
    grad = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in wanted.items()}
    sq = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in wanted.items()} if fisher else None
    step = 1 if fisher else max(1, chunk)
    n_seq, total_loss = tokens.shape[0], 0.0
    try:
        for p in params.values():
            p.requires_grad_(False)
        for p in wanted.values():
            p.requires_grad_(True)
        with torch.inference_mode(False), torch.enable_grad():
            for start in range(0, n_seq, step):
                ids = tokens[start : start + step].to(device)
                loss = lm_loss(model, ids)
                parts = torch.autograd.grad(loss, list(wanted.values()))
                share = ids.shape[0] / n_seq
                total_loss += float(loss.detach()) * share
                for (n, _p), part in zip(wanted.items(), parts, strict=True):
                    g = part.float()
                    grad[n].add_(g, alpha=share)
                    if sq is not None:
                        sq[n].addcmul_(g, g, value=1.0 / n_seq)
                if progress is not None:
                    progress(min(start + step, n_seq), n_seq)
    finally:
        for n, p in params.items():
            p.requires_grad_(flags[n])
    return Gradients(grad, sq, total_loss)


# ---- element and group scores -------------------------------------------------------------------
def element_scores(estimator: str, weight: torch.Tensor, grad: torch.Tensor | None = None,
                   fisher: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """Per-element score of one tensor (for `vectorize` signed: w * g, made absolute after summing)."""
    w = weight.detach().float()
    if estimator == "l2":
        return w.square()
    if estimator == "l1":
        return w.abs()
    if estimator in ("taylor", "vectorize", "mix"):
        if grad is None:
            raise ValueError(f"{estimator} importance needs gradients")
        first = w * grad
        if estimator == "taylor":
            return first.abs()
        if estimator == "vectorize":
            return first
        if fisher is None:
            raise ValueError("mix importance needs the Fisher diagonal")
        return (first - 0.5 * w.square() * fisher).abs()
    if estimator == "second":
        if fisher is None:
            raise ValueError("second-order importance needs the Fisher diagonal")
        return 0.5 * w.square() * fisher
    raise ValueError(f"no element scores for estimator {estimator!r}")


def member_sums(family: Family, member_index: int, scores: torch.Tensor) -> torch.Tensor:
    """Sum of `scores` (shaped like the member's tensor) over each group's part of that member: (units,)."""
    m = family.members[member_index]
    moved = scores.movedim(m.dim, 0)
    return moved.reshape(family.units, -1).sum(1)


def combine(parts: Sequence[torch.Tensor], reduce: str) -> torch.Tensor:
    stacked = torch.stack(list(parts))  # (members, units)
    if reduce == "sum":
        return stacked.sum(0)
    if reduce == "mean":
        return stacked.mean(0)
    if reduce == "max":
        return stacked.max(0).values
    raise ValueError(f"unknown reduction {reduce!r}")


def family_scores(family: Family, scores: Mapping[str, torch.Tensor], reduce: str = "sum",
                  absolute_after: bool = False) -> torch.Tensor:  # fmt: skip
    parts = []
    for i, m in enumerate(family.members):
        s = member_sums(family, i, scores[m.param])
        parts.append(s.abs() if absolute_after else s)
    return combine(parts, reduce)


# ---- activation importance (Minitron) -------------------------------------------------------------
class _ChannelStats:
    """sqrt(sum over sequences of (mean over tokens of |x_c|)^2) per channel c."""

    def __init__(self) -> None:
        self.sq: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        per_seq = x.detach().float().abs().mean(dim=1)  # (b, channels)
        value = per_seq.square().sum(0)
        self.sq = value if self.sq is None else self.sq + value

    def result(self) -> torch.Tensor:
        assert self.sq is not None, "no activations were recorded"
        return self.sq.sqrt()


def activation_scores(model: nn.Module, families: Sequence[Family], tokens: torch.Tensor, *, chunk: int = 1,
                      reduce: str = "sum") -> dict[Family, torch.Tensor]:  # fmt: skip
    layers: Any = decoder_layers(model)  # transformers' decoder layers: their parts are read as Any
    stats: dict[tuple[str, int | None], _ChannelStats] = {}
    hooks = []

    def watch(module: nn.Module, key: tuple[str, int | None], inputs: bool) -> None:
        stats[key] = _ChannelStats()

        def pre(_m: nn.Module, args: tuple[Any, ...]) -> None:
            stats[key].add(args[0])

        def post(_m: nn.Module, _args: tuple[Any, ...], out: torch.Tensor) -> None:
            stats[key].add(out)

        hooks.append(module.register_forward_pre_hook(pre) if inputs else module.register_forward_hook(post))

    norms: list[nn.Module] = []
    for f in families:
        if f.kind in ("kv-head", "q-head"):
            watch(layers[f.layer].self_attn.o_proj, ("attn", f.layer), True)
        elif f.kind == "mlp":
            watch(layers[f.layer].mlp.down_proj, ("mlp", f.layer), True)
        elif f.kind == "hidden":
            norms = [m for n, m in model.named_modules() if n.endswith("norm") and hasattr(m, "weight")]
            for i, m in enumerate(norms):
                watch(m, ("norm", i), False)
    device = input_embedding(model).weight.device
    try:
        with torch.inference_mode():
            for start in range(0, tokens.shape[0], max(1, chunk)):
                # the hooks take what they need: logits for one position only
                chunk_ids = tokens[start : start + max(1, chunk)].to(device)
                model(input_ids=chunk_ids, use_cache=False, logits_to_keep=1)
    finally:
        for h in hooks:
            h.remove()
    out: dict[Family, torch.Tensor] = {}
    for f in families:
        if f.kind == "mlp":
            out[f] = stats[("mlp", f.layer)].result()
        elif f.kind in ("kv-head", "q-head"):
            channels = stats[("attn", f.layer)].result()  # (heads * head_dim,)
            out[f] = channels.reshape(f.units, -1).square().sum(1).sqrt()  # L2 over the group's channels
        else:
            per_norm = [stats[("norm", i)].result() for i in range(len(norms))]
            out[f] = combine(per_norm, reduce)
    return out


# ---- contribution of a channel to its output projection (coupled components, K-prune) -------------------
def output_projection(model: nn.Module, family: Family) -> nn.Linear:
    """The projection a group's channels feed: o_proj for attention groups, down_proj for MLP channels."""
    if family.kind not in ("kv-head", "q-head", "mlp") or family.layer is None:
        raise KBError(f"the contribution estimator scores attention heads and MLP channels; {family.kind} groups "
                      "feed no single output projection")  # fmt: skip
    layer: Any = decoder_layers(model)[family.layer]  # transformers' decoder layer: its parts are read as Any
    projection: nn.Linear = (
        layer.self_attn.o_proj if family.kind in ("kv-head", "q-head") else layer.mlp.down_proj
    )
    return projection


def channel_energy(sq_inputs: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per input channel c of a linear: sum_t x_tc^2 * ||W[:, c]||^2 (the squared size of its contribution)."""
    return sq_inputs.float() * weight.detach().float().square().sum(0)


def input_sq_norms(model: nn.Module, families: Sequence[Family], tokens: torch.Tensor, *,
                   chunk: int = 1) -> dict[Family, torch.Tensor]:  # fmt: skip
    """sum_t x_tc^2 of every input channel of each family's output projection, over the calibration tokens."""
    sums: dict[Family, torch.Tensor] = {}
    hooks = []
    for f in families:
        proj = output_projection(model, f)

        def pre(_m: nn.Module, args: tuple[Any, ...], f: Family = f) -> None:
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])
            sums[f] = sums.get(f, 0) + x.square().sum(0)

        hooks.append(proj.register_forward_pre_hook(pre))
    device = input_embedding(model).weight.device
    try:
        with torch.inference_mode():
            for start in range(0, tokens.shape[0], max(1, chunk)):
                # the hooks take what they need: logits for one position only
                chunk_ids = tokens[start : start + max(1, chunk)].to(device)
                model(input_ids=chunk_ids, use_cache=False, logits_to_keep=1)
    finally:
        for h in hooks:
            h.remove()
    return sums


def contribution_scores(model: nn.Module, families: Sequence[Family], tokens: torch.Tensor, *,
                        chunk: int = 1) -> dict[Family, torch.Tensor]:  # fmt: skip
    """Per group: sum over its channels of ||x_c||_2 * ||W_out[:, c]||_2 (see the module docstring)."""
    sq = input_sq_norms(model, families, tokens, chunk=chunk)
    out = {}
    for f in families:
        per_channel = channel_energy(sq[f], output_projection(model, f).weight).sqrt()
        out[f] = per_channel.reshape(f.units, -1).sum(1)
    return out


# ---- one entry point ----------------------------------------------------------------------------------
def group_importance(
    model: nn.Module,
    families: Sequence[Family],
    estimator: str,
    *,
    tokens: torch.Tensor | None = None,
    reduce: str = "sum",
    chunk: int = 1,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[Family, torch.Tensor]:
    """One score per group of every family (higher = more important)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown importance estimator {estimator!r}; choose from {', '.join(ESTIMATORS)}")
    if estimator == "random":
        gen = torch.Generator().manual_seed(seed)
        return {f: torch.rand(f.units, generator=gen, dtype=torch.float64).float() for f in families}
    if estimator in ("activation", "contribution", *_NEEDS_GRAD, *_NEEDS_FISHER) and tokens is None:
        raise ValueError(f"{estimator} importance needs calibration tokens")
    if estimator == "activation":
        assert tokens is not None
        return activation_scores(model, families, tokens, chunk=chunk, reduce=reduce)
    if estimator == "contribution":
        assert tokens is not None
        return contribution_scores(model, families, tokens, chunk=chunk)
    params = dict(model.named_parameters())
    names = list(dict.fromkeys(m.param for f in families for m in f.members))
    grads = None
    if estimator in _NEEDS_GRAD or estimator in _NEEDS_FISHER:
        assert tokens is not None
        grads = loss_gradients(model, tokens, names, chunk=chunk, fisher=estimator in _NEEDS_FISHER,
                               progress=progress)  # fmt: skip
    out = {}
    for f in families:
        scores = {}
        for m in f.members:
            if m.param not in scores:
                g = grads.grad[m.param] if grads else None
                fi = grads.fisher[m.param] if grads and grads.fisher is not None else None
                scores[m.param] = element_scores(estimator, params[m.param], g, fi)
        out[f] = family_scores(f, scores, reduce, absolute_after=estimator == "vectorize")
    return out


# ---- choosing groups ------------------------------------------------------------------------------------
def lowest(scores: torch.Tensor, k: int) -> list[int]:
    """Indices of the k lowest scores (ties broken by index), sorted."""
    if k <= 0:
        return []
    order = sorted(range(scores.numel()), key=lambda i: (float(scores[i]), i))
    return sorted(order[:k])


def lowest_per_block(scores: torch.Tensor, k: int, block: int) -> list[int]:
    """The k lowest scores inside every consecutive block of `block` entries (query heads under each KV head)."""
    out: list[int] = []
    for start in range(0, scores.numel(), block):
        out += [start + i for i in lowest(scores[start : start + block], k)]
    return sorted(out)


def removal_count(units: int, ratio: float) -> int:
    """Groups to remove for a ratio: rounded to nearest (half up), always leaving at least one group."""
    return min(units - 1, math.floor(units * ratio + 0.5))
