"""BESA: learned per-linear sparsity inside each decoder block at a fixed budget.

Paper:    Xu, Shao, Chen, Tang, Zhang, Gao, An, Qiao, Luo. "BESA: Pruning Large Language Models with
          Blockwise Parameter-Efficient Sparsity Allocation". ICLR 2024, arXiv:2402.16880. Record id: `besa`.
Official: OpenGVLab/LLMPrune-BESA `models/sparse_layers.py::SparseLinear` (masks, straight-through
          estimator), `main.py` (block loss, sparsity penalty `--sparsity-beta 5`).
Idea:     decoder blocks are pruned one after another with frozen weights. In each row of a linear, weights
          are ranked by Wanda's |W| * ||X||. A linear's sparsity is a learned mixture over the candidates
          p in {1.00, 0.99, ..., 0.00}: beta = softmax(logits), s_hat = sum_d beta_d p_d. The hard mask prunes
          the floor(s_hat * in) lowest-ranked weights of every row; the soft mask keeps the k-th ranked
          weight with probability 1 - sum_{d: floor(p_d * in) > k} beta_d; the forward uses
          hard - soft.detach() + soft, so gradients reach the logits. Loss: squared error between the dense
          and the masked block outputs, each output column divided by the dense column's norm, plus
          beta_s * ((s_block - s) / s)^2 with s_block the parameter-weighted mean over the block's linears.
This:     allocation PER LINEAR within each block (the paper's layer-wise variant; the row-wise variant,
          blocksize 1, is not implemented). The budget is then made exact: each block prunes exactly
          floor(s * block parameters) weights (the learned counts are rounded, the remainder is given to the
          largest linear, and inside a linear the rows whose next weight scores lowest take one extra), so
          every block, and the model, is at the target sparsity up to one weight per block.
Differs:  Adam on the logits (the official code uses Prodigy), a few passes over a small calibration
          subset, logits initialised to zero (s_hat = 0.5 at the start, as upstream); no LoRA variant, no
          CUDA mask kernel, no hardware simulator.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from kb.results import Outcome

from . import wanda
from .harness.contract import Context
from .harness.layerwise import (
    InputStats,
    LayerInputs,
    capture_first_layer_inputs,
    decoder_layers,
    prunable_linears,
    run_layer,
    set_weight,
    small_ops,
)
from .harness.options import SparsityConfig
from .primitives.masks import count_to_prune


class Config(SparsityConfig):
    epochs: int = Field(2, ge=0)  # passes over the training samples per block
    train_samples: int = Field(2, ge=1)  # calibration sequences used to learn the sparsities (first n)
    batch: int = Field(1, ge=1)  # sequences per optimisation step
    lr: float = Field(0.05, gt=0)
    sparsity_beta: float = Field(5.0, ge=0)  # weight of the budget penalty
    step: float = Field(0.01, gt=0, le=0.5)  # spacing of the candidate sparsities


# ---- pure tensor math -----------------------------------------------------------------------
def candidates(step: float) -> torch.Tensor:
    """Candidate sparsities 1.0, 1 - step, ..., 0.0 (the last one exactly 0)."""
    n = round(1.0 / step)
    return torch.linspace(1.0, 0.0, n + 1)


def rank_map(cands: torch.Tensor, cols: int) -> torch.Tensor:
    """(D, cols): entry (d, k) = 1 when candidate d prunes the k-th lowest-ranked weight of a row."""
    counts = torch.floor(cands * cols + 1e-6).long()
    return (torch.arange(cols).unsqueeze(0) < counts.unsqueeze(1)).float()


def ranks(score: torch.Tensor) -> torch.Tensor:
    """Rank of every weight within its row, 0 = lowest score (pruned first)."""
    order = torch.argsort(score, dim=1, stable=True)
    out = torch.empty_like(order)
    out.scatter_(1, order, torch.arange(score.shape[1]).expand_as(order).contiguous())
    return out


class BesaLinear(nn.Module):
    """Wraps a frozen linear; its mask comes from learned logits over candidate sparsities (see the module)."""

    def __init__(self, linear: nn.Linear, score: torch.Tensor, cands: torch.Tensor) -> None:
        super().__init__()
        self.weight = linear.weight.detach().float()
        self.bias = None if linear.bias is None else linear.bias.detach().float()
        self.rank = ranks(score)
        self.cands = cands
        self.map = rank_map(cands, self.weight.shape[1])
        self.logits = nn.Parameter(torch.zeros(len(cands)))

    def sparsity(self) -> torch.Tensor:
        return torch.softmax(self.logits, 0) @ self.cands

    def mask(self) -> torch.Tensor:
        """Keep-mask (1 = keep) with the straight-through estimator: hard values, soft gradients."""
        beta = torch.softmax(self.logits, 0)
        keep_prob = 1.0 - beta @ self.map  # (cols,) by rank
        soft = keep_prob[self.rank]
        k = int(torch.floor(self.sparsity().detach() * self.weight.shape[1] + 1e-6))
        hard = (self.rank >= k).float()
        return hard - soft.detach() + soft

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight * self.mask(), self.bias)


def block_loss(dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
    """Squared error with every output feature divided by the norm of the dense output over tokens."""
    norm = dense.reshape(-1, dense.shape[-1]).norm(dim=0).clamp_min(1e-8)
    return ((dense - sparse) / norm).square().sum()


def exact_counts(learned: list[float], sizes: list[int], sparsity: float) -> list[int]:
    """Per-linear pruned counts close to `learned` sparsities, summing to exactly floor(s * total)."""
    target = count_to_prune(sum(sizes), sparsity)
    counts = [min(size, max(0, round(s * size))) for s, size in zip(learned, sizes, strict=True)]
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):  # the largest linears absorb the rest
        diff = target - sum(counts)
        if diff == 0:
            break
        counts[i] = min(sizes[i], max(0, counts[i] + diff))
    return counts


def count_mask(score: torch.Tensor, count: int) -> torch.Tensor:
    """Bool mask (True = prune) with `count` zeros in total: floor(count / rows) lowest per row, and one
    more in the rows whose next-lowest score is smallest."""
    rows, cols = score.shape
    base, extra = divmod(count, rows)
    order = torch.argsort(score, dim=1, stable=True)
    per_row = torch.full((rows,), base, dtype=torch.long)
    if extra:
        nxt = score.gather(1, order[:, base : base + 1]).squeeze(1)
        per_row[torch.argsort(nxt, stable=True)[:extra]] += 1
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(cols).expand_as(order).contiguous())
    return rank < per_row.unsqueeze(1)


# ---- model driver (mutates `model` in place) ----------------------------------------------
def _dense_pass(
    layer: nn.Module, chunks: list[LayerInputs]
) -> tuple[list[torch.Tensor], dict[str, InputStats]]:
    stats: dict[str, InputStats] = {}

    def hook_for(name: str):  # type: ignore[no-untyped-def]
        def before(_module: nn.Module, args: tuple) -> None:
            x = args[0]
            if name not in stats:
                stats[name] = InputStats.empty(x.shape[-1], "sq_norm", x.device)
            stats[name].add(x)

        return before

    linears = prunable_linears(layer)
    handles = [mod.register_forward_pre_hook(hook_for(name)) for name, mod in linears.items()]
    try:
        outputs = [run_layer(layer, c) for c in chunks]
    finally:
        for h in handles:
            h.remove()
    return outputs, stats


def _swap(layer: nn.Module, name: str, new: nn.Module) -> nn.Module:
    parent_name, _, child = name.rpartition(".")
    parent = layer.get_submodule(parent_name) if parent_name else layer
    old = getattr(parent, child)
    setattr(parent, child, new)
    return old


def learn_block(
    layer: nn.Module, chunks: list[LayerInputs], targets: list[torch.Tensor], stats: dict[str, InputStats],
    config: Config,
) -> dict[str, float]:  # fmt: skip
    """Learn per-linear sparsities of one block; returns them (the block's weights are not changed)."""
    cands = candidates(config.step)
    linears = prunable_linears(layer)
    wrappers = {
        name: BesaLinear(lin, wanda.wanda_scores(lin.weight.detach().float(), stats[name].sq_norm), cands)
        for name, lin in linears.items()
    }
    sizes = {name: w.weight.numel() for name, w in wrappers.items()}
    total = sum(sizes.values())
    originals = {name: _swap(layer, name, w) for name, w in wrappers.items()}
    opt = torch.optim.Adam([w.logits for w in wrappers.values()], lr=config.lr)
    try:
        with torch.enable_grad():
            for _epoch in range(config.epochs):
                for chunk, target in zip(chunks, targets, strict=True):
                    for start in range(0, chunk.hidden.shape[0], config.batch):
                        sl = slice(start, start + config.batch)
                        sub = LayerInputs(
                            chunk.hidden[sl], _slice_kwargs(chunk.kwargs, sl, chunk.hidden.shape[0])
                        )
                        out = run_layer(layer, sub)
                        s_block = sum(w.sparsity() * sizes[n] for n, w in wrappers.items()) / total
                        loss = (
                            block_loss(target[sl], out)
                            + config.sparsity_beta * ((s_block - config.sparsity) / config.sparsity).square()
                        )
                        opt.zero_grad()
                        loss.backward()
                        opt.step()
    finally:
        for name, lin in originals.items():
            _swap(layer, name, lin)
    return {name: float(w.sparsity().detach()) for name, w in wrappers.items()}


def _slice_kwargs(kwargs: dict, sl: slice, batch: int) -> dict:
    """Slice per-sample tensors of a decoder layer's kwargs (those with the batch as first dimension)."""
    out = {}
    for key, value in kwargs.items():
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch and batch > 1:
            out[key] = value[sl]
        elif isinstance(value, tuple) and all(isinstance(v, torch.Tensor) for v in value):
            out[key] = tuple(v[sl] if v.dim() > 0 and v.shape[0] == batch and batch > 1 else v for v in value)
        else:
            out[key] = value
    return out


def prune(model: nn.Module, calib: torch.Tensor, config: Config, ctx: Context | None = None) -> Outcome:
    """Learn and apply per-linear sparsities block by block; every block ends at exactly the target."""
    if config.pattern is not None:
        raise ValueError("BESA learns unstructured sparsities; N:M is not supported here")
    if config.sparsity == 0:
        raise ValueError("BESA needs a positive target sparsity (the budget penalty divides by it)")
    ctx = ctx or Context()
    torch.manual_seed(ctx.seed)
    with torch.no_grad():
        chunks = capture_first_layer_inputs(
            model, calib, calib.shape[0] if ctx.batch_size is None else ctx.batch_size
        )
    train = [LayerInputs(c.hidden, c.kwargs) for c in chunks]
    layers = decoder_layers(model)
    learned_all: list[list[float]] = []
    for index, layer in enumerate(layers):
        for p in layer.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            targets, stats = _dense_pass(layer, chunks)
        subset = _first_samples(train, targets, config.train_samples)
        learned = learn_block(layer, subset[0], subset[1], stats, config)
        linears = prunable_linears(layer)
        names = list(linears)
        counts = exact_counts(
            [learned[n] for n in names], [linears[n].weight.numel() for n in names], config.sparsity
        )
        with torch.no_grad():
            for name, count in zip(names, counts, strict=True):
                lin = linears[name]
                with small_ops(lin.weight.numel()):
                    score = wanda.wanda_scores(lin.weight.float(), stats[name].sq_norm)
                    set_weight(lin, lin.weight.float().masked_fill(count_mask(score, count), 0.0))
            chunks = [LayerInputs(run_layer(layer, c), c.kwargs) for c in chunks]
            train = chunks
        learned_all.append(
            [round(c / linears[n].weight.numel(), 5) for n, c in zip(names, counts, strict=True)]
        )
        if ctx.progress is not None:
            ctx.progress(index + 1, len(layers))
    return Outcome(
        kind="allocation",
        layer_sparsity=[config.sparsity] * len(layers),
        details={"allocation": "per linear within each block", "linear_sparsity": learned_all},
    )


def _first_samples(
    chunks: list[LayerInputs], targets: list[torch.Tensor], n: int
) -> tuple[list[LayerInputs], list[torch.Tensor]]:
    """The first `n` calibration sequences (over the chunks in order) with their dense targets."""
    out_c: list[LayerInputs] = []
    out_t: list[torch.Tensor] = []
    left = n
    for chunk, target in zip(chunks, targets, strict=True):
        if left <= 0:
            break
        take = min(left, chunk.hidden.shape[0])
        sl = slice(0, take)
        out_c.append(LayerInputs(chunk.hidden[sl], _slice_kwargs(chunk.kwargs, sl, chunk.hidden.shape[0])))
        out_t.append(target[sl])
        left -= take
    return out_c, out_t
