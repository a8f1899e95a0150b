"""ALPS: layer-wise pruning solved by ADMM with a growing penalty, then a conjugate-gradient refit of the support.

Paper:    Meng, Behdin, Wang, Mazumder. "ALPS: Improved Optimization for Highly Sparse One-Shot Pruning for
          Large Language Models". NeurIPS 2024, arXiv:2406.07831. Record id: `alps`.
Official: mazumder-lab/ALPS `alps.py::ALPS_prune.ALPS_admm` and `cg_batch` @ 8af9e6b; `llama.py` calls it
          with rho=0.1 and the defaults max_iter=300, update_iter=3, switch_iter=30, 10 CG steps.
Idea:     per linear, minimise ||X W^T - X What^T||^2 over W under a sparsity constraint. In scaled
          coordinates: H = X^T X plus 1% of its mean diagonal, s_j = sqrt(H_jj), Hn = H / (s s^T) (unit
          diagonal), Wn = W * s. ADMM splits W (least squares) from D (its sparse copy) with a dual V:
            W <- (G - V + rho D) (Hn + rho I)^-1     with G = Wn_dense Hn,
            D <- W + V / rho projected onto the set  (largest |.| of the whole matrix, or per N:M group),
            V <- V + rho (W - D).
          Every 3 iterations the support of D is compared with the one at the last check; with k the
          number of kept weights, rho grows x1.3 if more than 10% of k changed, x1.2 above 0.5%, x1.1 for
          any change; an unchanged support ends the loop once rho has grown. Before rho has grown, a
          penalty too strong to move the support is cut /5 (and D, V restart when it moved by under 0.5%).
          Past `switch_iter` iterations a change below 0.03% of k also ends it; rho is capped at 1e6. The
          last W is projected onto the set and its kept weights are refitted by conjugate gradient on that
          fixed support (residuals masked to the support, so pruned weights stay zero; every output row is
          its own system). Plain CG in scaled coordinates is CG on the original problem preconditioned by
          diag(H) (Jacobi), as upstream.
Differs:  (1) exactly floor(numel * s) weights pruned per matrix (upstream keeps round((1 - s) numel));
          equal magnitudes go by position (`masks`): only the first projection, of the dense weights, can
          tie (e.g. on dequantised checkpoints; the iterates are continuous); (2) the shared driver
          calibrates each linear on inputs from already-pruned predecessors in the same layer (upstream:
          all seven from the dense layer); (3) (Hn + rho I)^-1 comes from a float32 Cholesky factor made
          once per rho value, where upstream builds it from one float64 eigendecomposition (the same
          matrix to ~1e-5, and cheaper for the few rho values a short run visits); (4) CG runs its
          `cg_iter` steps without upstream's stopping test, which reads the residual off the support too
          and so practically never fires; (5) `max_iter` is the knob that trades quality for time: a claim
          that lowers it says so, and `Outcome.details` reports how many linears hit the cap.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from kb.results import Outcome

from .harness.contract import Context
from .harness.layerwise import InputStats, prune_layerwise, set_weight
from .harness.options import SparsityConfig
from .primitives.masks import count_to_prune, lowest_k_mask, nm_mask


class Config(SparsityConfig):
    rho0: float = Field(0.1, gt=0.0)  # initial penalty (llama.py passes 0.1)
    max_iter: int = Field(300, ge=1)  # ADMM iterations at most
    update_iter: int = Field(3, ge=1)  # iterations between penalty updates
    switch_iter: int = Field(30, ge=0)  # after this many, a support change below 0.03% of k stops
    cg_iter: int = Field(10, ge=0)  # conjugate-gradient steps on the final support
    percdamp: float = Field(0.01, ge=0.0)  # ridge added to H, as a fraction of its mean diagonal


# ---- pure tensor math -----------------------------------------------------------------------
def scaled_gram(gram: torch.Tensor, percdamp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(in, in) X^T X -> (Hn (in, in), s (in,)): the gram plus `percdamp` x its mean diagonal, scaled by
    s = sqrt(its diagonal) on both sides so that Hn has a unit diagonal (float32)."""
    h = gram.to(torch.float64, copy=True)
    mean = float(torch.diagonal(h).mean())
    h.diagonal().add_(percdamp * mean if mean > 0 else 1.0)
    s = torch.diagonal(h).sqrt() + 1e-8
    return (h / s.unsqueeze(0) / s.unsqueeze(1)).float(), s.float()


def penalised_inverse(hn: torch.Tensor, rho: float) -> torch.Tensor:
    """(Hn + rho I)^-1 (in, in), from a Cholesky factor (one per penalty value)."""
    shifted = hn.clone()
    shifted.diagonal().add_(rho)
    return torch.cholesky_inverse(torch.linalg.cholesky(shifted))


def project(w: torch.Tensor, config: Config) -> torch.Tensor:
    """(out, in) -> bool (out, in), True = pruned: the smallest |w| of the matrix, or per N:M group of a row."""
    if config.pattern is not None:
        return nm_mask(w.abs(), *config.pattern)
    return lowest_k_mask(w.abs(), count_to_prune(w.numel(), config.sparsity))


def admm(wn: torch.Tensor, hn: torch.Tensor, config: Config) -> tuple[torch.Tensor, int, float]:
    """Scaled dense weights (out, in) and Hn (in, in) -> (the last W-iterate (out, in), iterations run, the
    last penalty)."""
    g = wn @ hn  # (out, in): the data term of the W-update
    first = project(wn, config)
    start = wn.masked_fill(first, 0.0)  # D starts as the projection of the dense weights
    kept = int((~first).sum())
    rho, grown, inv = config.rho0, False, penalised_inverse(hn, config.rho0)
    d, v, w = start.clone(), torch.zeros_like(wn), wn
    last = d == 0  # the support at the last check
    it = 0
    for it in range(1, config.max_iter + 1):
        w = torch.add(g - v, d, alpha=rho) @ inv
        d = torch.add(w, v, alpha=1.0 / rho)
        d.masked_fill_(project(d, config), 0.0)
        v.add_(w - d, alpha=rho)
        if it % config.update_iter:
            continue
        now = d == 0
        change = int((now != last).sum())
        share = change / max(kept, 1)
        if share > 0.1:
            rho, grown = rho * 1.3, True
        elif share > 0.005:
            rho, grown = rho * 1.2, True
        elif change > 0:
            if grown:
                rho *= 1.1
            else:  # the penalty froze the support from the start: weaker, and begin again
                rho /= 5
                d, v, w = start.clone(), torch.zeros_like(wn), wn
        elif grown:
            break
        else:
            rho /= 5
        last = now
        rho = min(rho, 1e6)
        if it == config.max_iter or (it > config.switch_iter and share < 0.0003):
            break
        inv = penalised_inverse(hn, rho)
    return w, it, rho


def refit_support(
    w: torch.Tensor, keep: torch.Tensor, wn0: torch.Tensor, hn: torch.Tensor, steps: int
) -> torch.Tensor:
    """Conjugate gradient for min over rows of (w - w0) Hn (w - w0)^T with w zero off `keep` (bool (out, in)),
    from `w` (zero off `keep`); every output row is its own system (its own step sizes)."""
    on = keep.to(w.dtype)
    x = w.clone()
    r = ((wn0 - x) @ hn).mul_(on)  # (out, in): minus the gradient, on the support
    p = r.clone()  # search directions, zero off the support like r
    rr = torch.linalg.vecdot(r, r).unsqueeze(1)  # (out, 1)
    for _ in range(steps):
        hp = (p @ hn).mul_(on)
        php = torch.linalg.vecdot(p, hp).unsqueeze(1)
        alpha = torch.where(php > 0, rr / php.clamp_min(1e-30), 0.0)  # a converged row stands still
        x.addcmul_(alpha, p)
        r.addcmul_(alpha, hp, value=-1.0)
        rr_new = torch.linalg.vecdot(r, r).unsqueeze(1)
        beta = torch.where(rr > 0, rr_new / rr.clamp_min(1e-30), 0.0)
        p.mul_(beta).add_(r)
        rr = rr_new
    return x


def alps_prune(
    weight: torch.Tensor, hn: torch.Tensor, s: torch.Tensor, config: Config
) -> tuple[torch.Tensor, int, float]:
    """One weight (out, in) with its input's Hn (in, in) and scales s (in,) -> (pruned weight float32,
    ADMM iterations run, last penalty)."""
    if config.sparsity == 0 and config.pattern is None:
        return weight.float().clone(), 0, 0.0
    wn0 = weight.float() * s  # (out, in), scaled coordinates
    w, iterations, rho = admm(wn0, hn, config)
    pruned = project(w, config)
    w = refit_support(w.masked_fill(pruned, 0.0), ~pruned, wn0, hn, config.cg_iter)
    return w.masked_fill_(pruned, 0.0) / s, iterations, rho


# ---- model driver (mutates `model` in place) ----------------------------------------------
def prune(model: nn.Module, calib: torch.Tensor, config: Config, ctx: Context) -> Outcome:
    """Prune every decoder linear of `model` in place from calibration tokens `calib` (samples, seq)."""
    shared: list[tuple[InputStats, torch.Tensor, torch.Tensor]] = []  # q/k/v and gate/up read one input
    runs: list[tuple[int, float]] = []  # per linear: ADMM iterations, last penalty

    def step(_index: int, _name: str, linear: nn.Linear, stats: InputStats) -> None:
        assert stats.gram is not None
        if not shared or shared[0][0] is not stats:
            shared[:] = [(stats, *scaled_gram(stats.gram, config.percdamp))]
        new, iterations, rho = alps_prune(linear.weight, shared[0][1], shared[0][2], config)
        set_weight(linear, new)
        runs.append((iterations, rho))

    prune_layerwise(model, calib, step, stats="gram", batch_size=ctx.batch_size, progress=ctx.progress)
    count = max(len(runs), 1)
    details = {
        "linears": len(runs),
        "admm_iterations_mean": round(sum(i for i, _ in runs) / count, 2),
        "linears_at_max_iter": sum(i >= config.max_iter for i, _ in runs),  # ran up to the cap
        "final_rho_median": round(sorted(r for _, r in runs)[len(runs) // 2], 4) if runs else 0.0,
    }
    return Outcome(kind="weight-sparsity", details=details)
