"""SparseGPT: one-shot pruning with an approximate second-order (OBS) weight update.

Paper:    Frantar, Alistarh. "SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot".
          ICML 2023, arXiv:2301.00774. Record id: `sparsegpt`.
Official: IST-DASLab/sparsegpt `sparsegpt.py::SparseGPT.fasterprune` @ 147d215 (copied in locuslab/wanda).
Idea:     per linear, with H = X X^T from calibration inputs (plus 1% of its mean diagonal as damping), let U
          be the upper Cholesky factor of H^-1. Walk the input columns left to right in blocks of 128: at
          the start of a block choose the mask by the saliency w^2 / U_jj^2 (lowest fraction over the whole
          block, all rows together; for N:M the n lowest of every m columns in each row, chosen on the
          already-updated weights when the group starts); then column by column zero the masked weights and
          spread the error err = (w - q) / U_jj onto the columns not yet processed: W[:, j:] -= err U[j, j:].
          Later blocks receive the block's accumulated errors in one matrix product (lazy batch update).
Differs:  (1) exactly floor(block_numel * s) weights per block are pruned (upstream's `<=` threshold prunes
          one extra on ties/at the quantile); (2) the shared driver calibrates each linear on inputs from
          already-pruned predecessors in the same layer (upstream default: all linears from the dense
          layer); (3) no joint quantisation; (4) if the damped Hessian is not positive definite, damping is
          raised tenfold (up to three times) and the run says so, instead of failing or using identity.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch
from pydantic import Field, model_validator
from torch import nn

from kb.results import Outcome

from .harness.contract import Context
from .harness.layerwise import InputStats, prune_layerwise, set_weight
from .harness.options import SparsityConfig
from .primitives.masks import count_to_prune, lowest_k_per_row


class Config(SparsityConfig):
    blocksize: int = Field(128, ge=1)
    percdamp: float = Field(0.01, gt=0.0)

    @model_validator(mode="after")
    def _blocks_hold_whole_groups(self) -> Config:
        if self.pattern is not None and self.blocksize % self.pattern[1]:
            raise ValueError(f"blocksize {self.blocksize} must be a multiple of M={self.pattern[1]}")
        return self


# ---- pure tensor math -----------------------------------------------------------------------
def inverse_hessian_factor(gram: torch.Tensor, percdamp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(in, in) gram -> (upper Cholesky factor U of the damped inverse, mask of dead input features).

    Dead features (zero diagonal: never active) get H_jj = 1 so the factorisation exists.
    """
    h = gram.double().clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    damp = percdamp * torch.diagonal(h).mean()
    eye = torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    for attempt in range(4):
        chol, info = torch.linalg.cholesky_ex(h + damp * eye)
        if int(info) == 0:
            break
        print(
            f"sparsegpt: Hessian not positive definite, damping x10 (attempt {attempt + 1})", file=sys.stderr
        )
        damp = damp * 10
    else:
        raise RuntimeError("SparseGPT: damped Hessian is not positive definite; use more calibration data")
    inverse = torch.cholesky_inverse(chol)
    upper = torch.linalg.cholesky(inverse, upper=True)
    return upper.float(), dead


def sparsegpt_prune(
    weight: torch.Tensor, gram: torch.Tensor, config: Config, sparsity: float | None = None
) -> torch.Tensor:
    """Prune one weight matrix (out, in) given its input gram matrix (in, in); returns the new weight (float32).

    `sparsity` overrides the config's (per-layer allocation)."""
    w = weight.float().clone()
    sparsity = config.sparsity if sparsity is None else sparsity
    if sparsity == 0 and config.pattern is None:
        return w
    upper, dead = inverse_hessian_factor(gram, config.percdamp)
    w[:, dead] = 0.0
    cols = w.shape[1]
    for start in range(0, cols, config.blocksize):
        end = min(start + config.blocksize, cols)
        block = w[:, start:end].clone()  # (out, b)
        u = upper[start:end, start:end]  # (b, b)
        diag = torch.diagonal(u)  # (b,)
        errors = torch.zeros_like(block)
        mask = torch.zeros_like(block, dtype=torch.bool)
        if config.pattern is None:
            saliency = block.square() / diag.square()
            k = count_to_prune(saliency.numel(), sparsity)
            mask = lowest_k_per_row(saliency.reshape(1, -1), k).reshape(block.shape)
        for j in range(end - start):
            if config.pattern is not None and j % config.pattern[1] == 0:
                n, m = config.pattern
                group = block[:, j : j + m].square() / diag[j : j + m].square()
                mask[:, j : j + m] = lowest_k_per_row(group, n)
            col = block[:, j]
            err = torch.where(mask[:, j], col, torch.zeros_like(col)) / diag[j]  # (out,)
            block[:, j:] -= err.unsqueeze(1) * u[j, j:].unsqueeze(0)
            errors[:, j] = err
        block[mask] = 0.0  # exact zeros (the update leaves them at rounding level)
        w[:, start:end] = block
        if end < cols:
            w[:, end:] -= errors @ upper[start:end, end:]
    return w


# ---- model driver (mutates `model` in place) ----------------------------------------------
def prune(model: nn.Module, calib: torch.Tensor, config: Config, ctx: Context) -> Outcome:
    """Prune every decoder linear of `model` in place from calibration tokens `calib` (samples, seq)."""
    prune_layers(model, calib, config, None, ctx)
    return Outcome(kind="weight-sparsity")


def prune_layers(
    model: nn.Module, calib: torch.Tensor, config: Config, ratios: Sequence[float] | None, ctx: Context
) -> None:
    """As `prune`, with decoder layer i pruned to `ratios[i]` when given (used by allocation methods)."""

    def step(index: int, _name: str, linear: nn.Linear, stats: InputStats) -> None:
        assert stats.gram is not None
        sparsity = None if ratios is None else ratios[index]
        set_weight(linear, sparsegpt_prune(linear.weight, stats.gram, config, sparsity))

    prune_layerwise(model, calib, step, stats="gram", batch_size=ctx.batch_size, progress=ctx.progress)
